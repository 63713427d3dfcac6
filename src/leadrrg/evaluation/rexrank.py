"""ReXrank's benchmark files in, its submission file out (`leadrrg rexrank`), decoded by `generate_split`.

ReXrank (rajpurkarlab/ReXrank) asks a model for `python inference.py <input_json_file> <output_json_file>
<img_root_dir>`: the input is one of its study-keyed test files (`ReXRank_IUXray_test.json`,
`ReXRank_MIMICCXR_test.json`, `ReXRank_CheXpertPlus.json`: {study_id: {"image_path": [...], "section_findings",
"section_impression", ...}}), each image at `img_root_dir + image_path`; the output is the same object with the
generated report added to every entry as `model_prediction` (its MedVersa example and `example_files/prediction.json`),
which its evaluation script turns into `study_id,report` CSVs for CXR-Report-Metric. The file is read by leadrrg's
study-keyed reader (`leadrrg.data.readers.study_json`, through the `iu_xray` / `mimic_cxr` / `chexpert_plus`
formats), so a leading `/` is dropped and images are looked for under the image root, its `images/` or `files/`.

`write_rexrank` writes, in the output directory:

- `prediction.json` (SUBMISSION_NAME): every input entry, unchanged and in input order (NaN kept as ReXrank writes
  it), plus `model_prediction`: the run's generated report (its `data.section`, findings for every preset), in
  leadrrg's normalised form ("the heart is normal in size ."), without a "Findings:" prefix;
- `prediction.csv` (CSV_NAME): `study_id,report`, the predicted-reports CSV of ReXrank's evaluation script;
- `preds.jsonl` (PREDS_NAME): leadrrg's prediction records (`leadrrg.evaluation.predictions`) of the studies whose
  reference section is not empty, what `leadrrg evaluate --preds` scores.

Every study gets a prediction, those with an empty reference section too (CheXpert Plus: 139 of 200 have no
findings). Assumed where the convention is silent: the submission keeps only what the input had plus
`model_prediction` (no probabilities); `--limit N` writes the first N studies only.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadrrg.config import DATA_FORMATS, DataConfig
from leadrrg.data.dataset import raise_on_bad_images
from leadrrg.data.manifests import read_records
from leadrrg.data.readers.study_json import is_study_keyed
from leadrrg.data.records import Study
from leadrrg.data.text import clean_report, select_section
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.predictions import write_predictions
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.batch import check_out_not_input
from leadrrg.inference.predict import generate_split
from leadrrg.io import atomic_write_text, check_output_dir, check_writable, read_json_object

SUBMISSION_NAME = "prediction.json"
CSV_NAME = "prediction.csv"
PREDS_NAME = "preds.jsonl"
PREDICTION_KEY = "model_prediction"
EXPECTED = (
    "ReXrank's study-keyed JSON ({study_id: {image_path: [...], section_findings, section_impression, ...}}, "
    "e.g. ReXRank_MIMICCXR_test.json)"
)
FORMAT_BY_NAME = (("chexpert", "chexpert_plus"), ("mimic", "mimic_cxr"), ("iu", "iu_xray"))


@dataclass
class RexrankResult:
    """What `write_rexrank` wrote: the files, the studies predicted and those with a reference to score (`preds`
    is None when no study has one: nothing for `leadrrg evaluate`)."""

    submission: Path
    csv: Path
    preds: Path | None
    studies: int
    scored: int


def benchmark_format(path: str | Path, data_format: str = "auto") -> str:
    """The data format whose reader reads a ReXrank file: `data_format`, or from the file name when "auto"
    (CheXpert -> chexpert_plus, MIMIC -> mimic_cxr, else iu_xray)."""
    if data_format != "auto":
        if data_format not in DATA_FORMATS or data_format in ("synth", "jsonl"):
            raise LeadrrgError(
                f"--format is {data_format!r}; expected auto, iu_xray, mimic_cxr or chexpert_plus (ReXrank's three "
                "sets)"
            )
        return data_format
    name = Path(path).name.lower()
    return next((fmt for word, fmt in FORMAT_BY_NAME if word in name), "iu_xray")


def read_benchmark(path: str | Path) -> dict[str, dict[str, Any]]:
    """The study-keyed object of a ReXrank file, checked (LeadrrgError naming the file otherwise)."""
    value = read_json_object(path, "ReXrank input", EXPECTED)
    if not is_study_keyed(value):
        raise LeadrrgError(
            f"ReXrank input {path} is not an object of study id -> entry objects; expected {EXPECTED}"
        )
    return value


def benchmark_studies(
    path: str | Path,
    image_root: str | Path,
    data: DataConfig,
    data_format: str = "auto",
    limit: int | None = None,
) -> tuple[dict[str, dict[str, Any]], list[Study]]:
    """(the input object, one Study per entry in input order, the first `limit`): images resolved under
    `image_root` and checked readable, reference = the `data.section` of the entry, cleaned as `data.clean` (may be
    empty)."""
    path, image_root = Path(path), Path(image_root)
    entries = read_benchmark(path)
    keys = list(entries)[:limit] if limit else list(entries)
    data = DataConfig(
        format=benchmark_format(path, data_format),
        root=str(image_root),
        annotation_file=str(path.absolute()),
        section=data.section,
        clean=data.clean,
        max_report_tokens=data.max_report_tokens,
        num_workers=data.num_workers,
    )
    records = {record.id: record for record in read_records(data)}
    missing = [key for key in keys if key not in records]
    if missing:
        raise LeadrrgError(
            f"ReXrank input {path}: {len(missing)} studies (e.g. {missing[0]!r}) were not read as studies by the "
            f"{data.format} reader; expected one study per entry (give --format)"
        )
    studies = []
    for key in keys:
        record = records[key]
        report = clean_report(select_section(record.findings, record.impression, data.section), data.clean)
        studies.append(
            Study(key, record.split, list(record.images), report, record.labels, record.attributes)
        )
    return entries, studies


def write_rexrank(
    generator: ReportGenerator,
    run_dir: str | Path,
    path: str | Path,
    image_root: str | Path,
    out_dir: str | Path,
    data_format: str = "auto",
    limit: int | None = None,
) -> RexrankResult:
    """Reports for every study of the ReXrank file `path` (images under `image_root`), written to `out_dir` as the
    module docstring says. Inputs are checked and outputs probed before decoding; each file is written atomically."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "--out")
    entries, studies = benchmark_studies(path, image_root, generator.config.data, data_format, limit)
    raise_on_bad_images(studies, generator.config.model.max_views, f"ReXrank input {path}")
    result = RexrankResult(
        out_dir / SUBMISSION_NAME, out_dir / CSV_NAME, out_dir / PREDS_NAME, len(studies), 0
    )
    for out in (result.submission, result.csv, result.preds):
        check_out_not_input(out, run_dir, studies, inputs=str(path))
        check_writable(out, "--out")
    records = generate_split(generator, studies, progress=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    submission = {
        study.id: {**entries[study.id], PREDICTION_KEY: record["generated"]}
        for study, record in zip(studies, records)
    }
    atomic_write_text(result.submission, json.dumps(submission, indent=4) + "\n")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["study_id", "report"])
    writer.writerows([study_id, entry[PREDICTION_KEY]] for study_id, entry in submission.items())
    atomic_write_text(result.csv, table.getvalue())
    scored = [record for record in records if record["reference"]]
    result.scored = len(scored)
    if scored:
        write_predictions(result.preds, scored)
    else:
        result.preds = None
    return result
