"""`leadrrg rexrank`: ReXrank's study-keyed test JSON in, its submission layout (plus preds.jsonl) out, on a tiny
ReXrank-layout root built here and an untrained tiny run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.evaluation.predictions import read_predictions
from leadrrg.evaluation.rexrank import benchmark_format
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run

FINDINGS = [
    "The heart is normal in size. There is a small right pleural effusion.",
    "No focal consolidation, pleural effusion or pneumothorax.",
    float("nan"),  # ReXrank's CheXpert Plus file has studies without findings (JSON NaN)
]


def make_rexrank_root(root: Path) -> tuple[Path, Path]:
    """ReXrank's MIMIC layout: `root/ReXRank_MIMICCXR_test.json` keyed by study id, image paths `/p10/...` under
    `root/files` (the img_root_dir), two views per study named in `frontal_lateral` (lateral first)."""
    entries = {}
    for index, findings in enumerate(FINDINGS):
        subject, study = 10000000 + index, 50000000 + index
        folder = f"/p10/p{subject}/s{study}"
        paths = [f"{folder}/lateral{index}.png", f"{folder}/frontal{index}.png"]
        for view, path in enumerate(paths):
            write_png(root / "files" / path.lstrip("/"), seed=index * 10 + view)
        entries[str(study)] = {
            "image_path": paths,
            "frontal_lateral": ["Lateral", "Frontal"],
            "section_findings": findings,
            "section_impression": "No acute cardiopulmonary process.",
            "subject_id": subject,
            "context": "<context>Indication: cough.</context>",
        }
    path = root / "ReXRank_MIMICCXR_test.json"
    path.write_text(json.dumps(entries, indent=2))  # allow_nan: NaN as ReXrank writes it
    return path, root / "files"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 2}, views=2)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)


def test_rexrank_writes_the_submission_layout_and_preds_that_evaluate_reads(tiny_run, tmp_path, capsys):
    source, image_root = make_rexrank_root(tmp_path / "rexrank")
    out = tmp_path / "preds"
    args = ["rexrank", "--run", str(tiny_run), "--input", str(source), "--image-root", str(image_root)]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 ReXrank predictions" in printed and "leadrrg evaluate --preds" in printed

    entries = json.loads(source.read_text())
    submission = json.loads((out / "prediction.json").read_text())
    assert list(submission) == list(entries)  # every study, in input order, keyed by study id
    for study_id, entry in submission.items():
        assert isinstance(entry.pop("model_prediction"), str)
        original = entries[study_id]
        assert entry.keys() == original.keys() and entry["image_path"] == original["image_path"]
    assert math.isnan(submission["50000002"]["section_findings"])  # NaN kept as the input had it

    rows = list(csv.DictReader((out / "prediction.csv").open()))
    assert [r["study_id"] for r in rows] == list(entries)
    assert [r["report"] for r in rows] == [
        json.loads((out / "prediction.json").read_text())[k]["model_prediction"] for k in entries
    ]

    records = read_predictions(out / "preds.jsonl")  # what `leadrrg evaluate --preds` reads
    assert [r["id"] for r in records] == ["50000000", "50000001"]  # the study without findings is not scored
    assert records[0]["reference"].startswith("the heart is normal in size")
    assert [r["generated"] for r in records] == [r["report"] for r in rows[:2]]


def test_rexrank_limit_format_and_errors(tiny_run, tmp_path, capsys):
    source, image_root = make_rexrank_root(tmp_path / "rexrank")
    out = tmp_path / "out"
    base = ["rexrank", "--run", str(tiny_run), "--input", str(source), "--out", str(out)]
    assert (
        main([*base, "--image-root", str(tmp_path / "rexrank"), "--limit", "1", "--format", "mimic_cxr"]) == 0
    )
    assert list(json.loads((out / "prediction.json").read_text())) == [
        "50000000"
    ]  # files/ found under the root
    capsys.readouterr()
    assert main([*base, "--image-root", str(tmp_path / "none")]) == 2
    assert "--image-root" in capsys.readouterr().err
    bad = tmp_path / "ReXRank_IUXray_test.json"
    bad.write_text(json.dumps({"test": [{"id": "a"}]}))
    assert (
        main(
            [
                "rexrank",
                "--run",
                str(tiny_run),
                "--input",
                str(bad),
                "--image-root",
                str(image_root),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "expected ReXrank's study-keyed JSON" in capsys.readouterr().err
    assert main([*base, "--image-root", str(image_root), "--set", "model.decoder.num_layers=9"]) == 2
    assert "only decode.* can be changed in rexrank" in capsys.readouterr().err
    assert benchmark_format("x/ReXRank_CheXpertPlus.json") == "chexpert_plus"
    assert benchmark_format("ReXRank_IUXray_valid.json") == "iu_xray"
