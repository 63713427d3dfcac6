"""Train + generate + evaluate through every real-data layout (tiny fixture data sets)."""

import json

import pytest

from leadrrg.config import apply_overrides, load_preset
from leadrrg.experiments.runner import run_experiment
from tests.fixtures_data import make_chexpert_plus, make_iu_xray, make_jsonl, make_mimic_cxr

TINY = [
    "model.vision.image_size=64",
    "train.max_steps=2",
    "train.batch_size=2",
    "train.eval_every=2",
    "train.save_every=2",
    "data.num_workers=0",
    "decode.max_new_tokens=6",
    "decode.batch_size=2",
    "model.grounding.expert_warmup_steps=0",
]


def make_mimic_as_downloaded(root):
    """MIMIC-CXR-JPG as PhysioNet ships it: images under files/, the split named `validate`, labels as .csv.gz."""
    import gzip

    root = make_mimic_cxr(root)
    (root / "images").rename(root / "files")
    annotation = json.loads((root / "annotation.json").read_text())
    annotation["validate"] = annotation.pop("val")
    (root / "annotation.json").write_text(json.dumps(annotation))
    plain = root / "mimic-cxr-2.0.0-chexpert.csv"
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return root


def test_mimic_as_downloaded_trains_with_validation_and_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADRRG_CACHE", str(tmp_path / "cache"))
    root = make_mimic_as_downloaded(tmp_path / "mimic")
    overrides = [f"data.root={root}", "data.grouping=study", "model.max_views=2"]
    config = apply_overrides(load_preset("mimic_cxr"), overrides + TINY + ["decode.strategy=greedy"])
    run_experiment(config, tmp_path / "run", ["test"], meteor=False, quiet=True)
    logs = [json.loads(line) for line in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    assert any("val_loss" in record for record in logs)  # `validate` is the validation split
    assert not list((tmp_path / "cache").glob("labels/report_labels-*.csv"))  # the .csv.gz labels were used


@pytest.mark.parametrize(
    "fmt, preset, build, views",
    [
        ("iu_xray", "iu_xray", make_iu_xray, 2),
        ("mimic_cxr", "mimic_cxr", make_mimic_cxr, 1),
        ("chexpert_plus", "chexpert_plus", make_chexpert_plus, 2),
        ("jsonl", "demo", lambda root: make_jsonl(root, labels=False), 1),
    ],
)
def test_train_generate_evaluate_through_layout(tmp_path, monkeypatch, fmt, preset, build, views):
    monkeypatch.setenv("LEADRRG_CACHE", str(tmp_path / "cache"))
    root = build(tmp_path / fmt)
    overrides = [f"data.root={root}", f"data.format={fmt}", f"model.max_views={views}"]
    config = apply_overrides(load_preset(preset), overrides + TINY + ["decode.strategy=greedy"])
    result = run_experiment(config, tmp_path / "run", ["test"], meteor=False, quiet=True)
    records = result.predictions["test"]
    assert len(records) == 2 and all(isinstance(r["generated"], str) for r in records)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["meta"]["num_studies"] == 2 and 0.0 <= metrics["ce14_micro_f1"] <= 1.0
    if fmt in ("iu_xray", "jsonl"):  # no labels in these layouts: the labeler filled them, cached on disk
        cached = list((tmp_path / "cache" / "labels").glob("report_labels-*.csv"))
        assert cached and len(cached[0].read_text().splitlines()) > 1
