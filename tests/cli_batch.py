"""Run several `leadrrg` command lines in one process (torch is imported once), each with its own exit code and
captured stdout / stderr, for the robustness suite (tests/test_robustness.py).

    python -m tests.cli_batch CASES.json RESULTS.json

CASES.json: {name: [argv...]}; RESULTS.json: {name: {"rc": int, "stdout": str, "stderr": str, "seconds": float}}. An exception that
escapes `leadrrg.cli.main` is printed as a traceback into that case's stderr and gives rc -1.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import traceback
from pathlib import Path


def run_one(argv: list[str]) -> dict:
    from leadrrg.cli import main

    for name in (None, "leadrrg.labeler"):  # handlers bound to an earlier case's stderr
        logging.getLogger(name).handlers.clear()
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 (reported, not raised: the test says which case)
            traceback.print_exc()
            rc = -1
    seconds = time.perf_counter() - started
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": seconds}


def main(cases_path: str, results_path: str) -> None:
    cases = json.loads(Path(cases_path).read_text())
    results = {name: run_one(argv) for name, argv in cases.items()}
    Path(results_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
