"""`python -m leadrrg` = the `leadrrg` console script."""

import sys

from leadrrg.cli import main

sys.exit(main())
