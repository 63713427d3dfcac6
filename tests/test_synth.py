"""SynthCXR: determinism, on-disk schema, label/report/image consistency, the shift split, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leadrrg.cli import main
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.synth import generate as synth
from leadrrg.data.synth.generate import (
    FINDING_NAMES,
    Finding,
    Findings,
    SynthConfig,
    findings_from_labels,
    render_image,
    sample_findings,
    synthesize,
    write_report,
)
from leadrrg.errors import LeadrrgError

COUNTS = {"train": 5, "val": 2, "test": 2, "shift_test": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth") / "a", COUNTS, size=64, seed=7, workers=1)


# -- findings and the prior -----------------------------------------------------------------------------


def test_labels_follow_chexpert_no_finding_rule():
    assert Findings().labels().tolist() == [1] + [0] * 13
    devices = Findings({"Support Devices": Finding(devices=("pacemaker",))})
    assert devices.labels()[0] == 1 and devices.labels()[13] == 1
    effusion = Findings({"Pleural Effusion": Finding("large", "left")})
    labels = effusion.labels()
    assert labels[0] == 0 and labels[OBSERVATIONS.index("Pleural Effusion")] == 1 and labels.sum() == 1
    with pytest.raises(LeadrrgError):
        Findings({"No Finding": Finding()})


def test_findings_from_labels_treats_uncertain_and_missing_as_absent():
    labels = [np.nan] * 14
    labels[OBSERVATIONS.index("Edema")] = 1
    labels[OBSERVATIONS.index("Pneumonia")] = -1
    labels[OBSERVATIONS.index("Cardiomegaly")] = 0
    f = findings_from_labels(labels, np.random.default_rng(0))
    assert list(f.present) == ["Edema"]
    with pytest.raises(LeadrrgError):
        findings_from_labels([1, 0], np.random.default_rng(0))


def _label_matrix(independent: bool, n: int = 800) -> np.ndarray:
    rng = np.random.default_rng(1)
    config = SynthConfig()
    return np.stack([sample_findings(rng, config, independent).labels() for _ in range(n)]).astype(float)


def test_shift_split_breaks_cooccurrence_at_matched_prevalence():
    prior, shift = _label_matrix(False), _label_matrix(True)
    i, j, k = (OBSERVATIONS.index(n) for n in ("Cardiomegaly", "Pleural Effusion", "Edema"))
    c = OBSERVATIONS.index("Consolidation")
    p = OBSERVATIONS.index("Pneumonia")
    for a, b in ((i, j), (i, k), (c, p)):
        assert np.corrcoef(prior[:, a], prior[:, b])[0, 1] > 0.3
        assert abs(np.corrcoef(shift[:, a], shift[:, b])[0, 1]) < 0.12
    # Marginal prevalence matched (within sampling noise).
    assert np.abs(prior[:, 1:].mean(0) - shift[:, 1:].mean(0)).max() < 0.05
    assert 0.25 < prior[:, 0].mean() < 0.75  # a realistic share of normal studies


def test_config_json_round_trip_and_validation():
    config = SynthConfig(hedge_rate=0.0)
    again = SynthConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    with pytest.raises(LeadrrgError):
        SynthConfig(background={"Cardiomegaly": 1.5})
    with pytest.raises(LeadrrgError):
        SynthConfig.from_dict({"nope": 1})


# -- reports --------------------------------------------------------------------------------------------

KEYWORDS = {
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Cardiomegaly": ("cardiomegaly", "heart is", "heart size is mildly", "enlargement of the cardiac"),
    "Lung Opacity": ("opacit",),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("fracture",),
    "Support Devices": ("tube", "catheter", "line", "picc", "pacemaker", "sternotomy"),
}


def test_reports_mention_every_positive_and_normal_reports_are_normal():
    rng = np.random.default_rng(3)
    config = SynthConfig()
    for _ in range(300):
        f = sample_findings(rng, config, independent=bool(rng.integers(2)))
        report = write_report(f, rng, config).lower()
        assert report.endswith(".")
        for name in f.present:
            assert any(k in report for k in KEYWORDS[name]), (name, report)
        if not f.present:  # a normal study: every sentence is a negative or a normal statement
            for sentence in report.split(". "):
                assert any(k in sentence for k in ("no ", "normal", "clear", "intact")), report


def test_reports_state_severity_and_side():
    rng = np.random.default_rng(0)
    report = write_report(Findings({"Pleural Effusion": Finding("large", "left")}), rng).lower()
    assert "large left" in report and "effusion" in report
    report = write_report(Findings({"Pneumothorax": Finding("mild", "right")}), rng).lower()
    assert "small right" in report
    texts = {write_report(Findings({"Cardiomegaly": Finding("moderate")}), rng) for _ in range(30)}
    assert len(texts) > 3  # wording varies


# -- images ---------------------------------------------------------------------------------------------


def _render(findings: Findings, seed: int, size: int = 128) -> np.ndarray:
    return render_image(findings, size, np.random.default_rng(seed)).astype(float)


def test_render_shape_dtype_and_determinism():
    a = render_image(Findings(), 96, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == (96, 96)
    assert np.array_equal(a, render_image(Findings(), 96, np.random.default_rng(5)))
    assert not np.array_equal(a, render_image(Findings(), 96, np.random.default_rng(6)))
    assert 30 < a.mean() < 220 and a.std() > 20  # not blank


def _heart_width(image: np.ndarray) -> float:
    """Bright-pixel run through the image centre, averaged over rows just above the diaphragm."""
    rows = image[int(0.58 * len(image)) : int(0.66 * len(image))]
    widths = []
    for row in rows:
        threshold = (np.percentile(row, 20) + np.percentile(row, 90)) / 2
        centre = len(row) // 2
        left = centre
        while left > 0 and row[left - 1] > threshold:
            left -= 1
        right = centre
        while right < len(row) - 1 and row[right + 1] > threshold:
            right += 1
        widths.append(right - left)
    return float(np.mean(widths))


def test_cardiomegaly_widens_the_heart_silhouette():
    large = Findings({"Cardiomegaly": Finding("large")})
    wider = [_heart_width(_render(large, s)) > _heart_width(_render(Findings(), s)) + 3 for s in range(8)]
    assert sum(wider) >= 7


def test_effusion_brightens_the_base_on_its_side():
    size = 128
    rows = slice(int(0.62 * size), int(0.76 * size))
    right_patient = slice(int(0.12 * size), int(0.38 * size))  # the patient's right is the image's left
    left_patient = slice(int(0.62 * size), int(0.88 * size))
    for seed in range(4):
        base = _render(Findings(), seed)
        eff = _render(Findings({"Pleural Effusion": Finding("moderate", "right")}), seed)
        gain_right = eff[rows, right_patient].mean() - base[rows, right_patient].mean()
        gain_left = eff[rows, left_patient].mean() - base[rows, left_patient].mean()
        assert gain_right > 12 and gain_right > gain_left + 10


def test_every_finding_changes_the_image():
    for name in FINDING_NAMES:
        attrs = Finding("large", "left", "lower", ("pacemaker", "endotracheal tube"))
        if name in ("Cardiomegaly", "Enlarged Cardiomediastinum", "Edema"):
            attrs = Finding("large")
        # Same rng state: same patient, so the difference is the finding alone.
        diff = np.abs(_render(Findings({name: attrs}), 11) - _render(Findings(), 11))
        assert (diff > 20).sum() >= 30, name


# -- synthesize and the CLI -----------------------------------------------------------------------------


def test_dataset_schema(dataset: Path):
    lines = (dataset / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["split"] for r in records] == [s for s, n in COUNTS.items() for _ in range(n)]
    for r in records:
        assert {"id", "split", "images", "report", "labels"} <= set(r)
        assert len(r["labels"]) == 14 and set(r["labels"]) <= {0, 1}
        assert r["images"] == [f"images/{r['id']}/0.png"] and (dataset / r["images"][0]).is_file()
        assert r["labels"] == Findings.from_dict(r["findings"]).labels().tolist()
        assert r["report"]
    annotation = json.loads((dataset / "annotation.json").read_text())
    assert set(annotation) == {"train", "val", "test", "shift_test"}
    assert all(len(annotation[s]) == n for s, n in COUNTS.items())
    entry = annotation["val"][0]
    assert set(entry) == {"id", "report", "image_path", "split"} and entry["split"] == "val"
    assert SynthConfig.from_dict(json.loads((dataset / "synth_config.json").read_text())) == SynthConfig()
    from PIL import Image

    with Image.open(dataset / records[0]["images"][0]) as image:
        assert image.mode == "L" and image.size == (64, 64)


def test_same_bytes_for_same_seed_and_any_worker_count(dataset: Path, tmp_path: Path):
    two = synthesize(tmp_path / "b", COUNTS, size=64, seed=7, workers=2)
    assert _files(two) == _files(dataset)
    other = synthesize(tmp_path / "c", COUNTS, size=64, seed=8, workers=1)
    assert _files(other)["manifest.jsonl"] != _files(dataset)["manifest.jsonl"]


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch):
    calls = []

    def failing(task):
        calls.append(task)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return original(task)

    original = synth._work
    monkeypatch.setattr(synth, "_work", failing)
    with pytest.raises(RuntimeError):
        synthesize(tmp_path / "out", {"train": 5}, size=48, seed=0, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(LeadrrgError):
        synthesize(tmp_path / "x", {"train": -1}, size=64)
    with pytest.raises(LeadrrgError):
        synthesize(tmp_path / "x", {"train": 0}, size=64)
    with pytest.raises(LeadrrgError):
        synthesize(tmp_path / "x", {"holdout": 2}, size=64)
    with pytest.raises(LeadrrgError):
        synthesize(tmp_path / "x", {"train": 2}, size=8)


def test_cli(tmp_path: Path, capsys):
    out, preview = tmp_path / "data", tmp_path / "sheet.png"
    argv = [
        "synth",
        "--out",
        str(out),
        "--train",
        "4",
        "--val",
        "1",
        "--test",
        "1",
        "--shift-test",
        "2",
        "--size",
        "64",
        "--workers",
        "1",
        "--quiet",
    ]
    assert main([*argv, "--preview", str(preview)]) == 0
    assert preview.is_file() and (out / "manifest.jsonl").is_file()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 8
    assert main(argv) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0
    assert main(["synth", "--out", str(tmp_path / "neg"), "--train", "-3", "--quiet"]) == 2
    assert main(["synth", "--out", str(tmp_path / "p"), "--train", "2", "--preview", "x.jpg", "--quiet"]) == 2
    assert not (tmp_path / "neg").exists()
