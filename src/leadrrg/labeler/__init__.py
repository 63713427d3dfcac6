"""Rule-based chest X-ray report labeler with CheXpert-format output (no torch).

`label_reports(reports) -> (N, 14) float32` in `constants.OBSERVATIONS` order: 1.0 positive,
0.0 negative, -1.0 uncertain, NaN not mentioned. An empty report is all NaN; any other report
gets No Finding 1.0 when no observation other than Support Devices (and no other abnormality
such as emphysema, granuloma or scoliosis) is positive or uncertain, else blank, as in CheXpert.

`label_attributes(reports)` gives, per report, the side, severity and zone of every asserted observation
(`labeler.attributes`).
"""

from leadrrg.labeler.attributes import (
    ATTRIBUTE_COLUMNS,
    attribute_columns,
    flatten_attributes,
    label_attributes,
)
from leadrrg.labeler.reports_io import read_reports, write_chexpert_csv
from leadrrg.labeler.rules import label_reports, label_text, normalize

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "attribute_columns",
    "flatten_attributes",
    "label_attributes",
    "label_reports",
    "label_text",
    "normalize",
    "read_reports",
    "write_chexpert_csv",
]
