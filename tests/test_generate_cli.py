"""`leadrrg generate` end to end on a tiny run directory (built directly, no training) and a tiny JSONL data set:
predictions files, evidence, image mode, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leadrrg.cli import main
from leadrrg.config import DataConfig, DecodeConfig, RunConfig
from leadrrg.data.manifests import load_studies
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.evaluation.predictions import read_predictions
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.predict import generate_split
from leadrrg.model.lead import LeadModel
from leadrrg.runs.files import save_model_weights
from leadrrg.train.checkpoint import init_run_dir
from tests.fixtures_data import FIXTURE_REPORTS, make_jsonl, write_png
from tests.test_model_helpers import EXPERTS, perturb_zero_init, tiny_config

SHORT = ["--set", "decode.max_new_tokens=6"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 3}, views=2)


def write_tiny_run(run: Path, data_root: Path, max_new_tokens: int | None = None) -> Path:
    """A run directory as leadrrg train writes it (config.json, tokenizer/, model.safetensors), untrained."""
    tokenizer = ReportTokenizer.train([findings for findings, _, _ in FIXTURE_REPORTS] * 4, vocab_size=300)
    config = RunConfig(model=tiny_config(), data=DataConfig(format="jsonl", root=str(data_root)))
    if max_new_tokens is not None:
        config.decode.max_new_tokens = max_new_tokens
    torch.manual_seed(0)
    model = LeadModel(config.model, tokenizer.vocab_size, tokenizer.pad_id)
    perturb_zero_init(model)
    init_run_dir(run, config, tokenizer)
    save_model_weights(model, run / "model.safetensors")
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"), data_root)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_split_predictions_evaluate_reads(run_dir, data_root, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert main(["generate", "--run", str(run_dir), "--data", str(data_root), "--out", str(out), *SHORT]) == 0
    records = lines(out)
    assert [r["id"] for r in records] == [
        s.id for s in load_studies(DataConfig("jsonl", str(data_root)), "test")
    ]
    for record in records:
        assert set(record) == {"id", "reference", "generated", "labels", "made_by"}  # made_by: to resume
        assert isinstance(record["generated"], str) and len(record["labels"]) == 14
    assert len(read_predictions(out)) == 3  # the format `leadrrg evaluate` reads
    assert "wrote 3 reports" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_evidence_beam_and_limit(run_dir, tmp_path):
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--run", str(run_dir), "--out", str(out), "--limit", "2", "--evidence", *SHORT]
    assert (
        main([*args, "--set", "decode.strategy=beam", "--set", "decode.num_beams=2"]) == 0
    )  # data.root of the run
    records = lines(out)
    assert len(records) == 2
    for record in records:
        assert list(record["expert_probs"]) == EXPERTS
        evidence = record["evidence"]  # the compact format of leadrrg.inference.evidence
        steps = len(evidence["tokens"])
        assert 1 <= steps <= 6 and evidence["experts"] == EXPERTS and evidence["layers"] == 2
        for token in evidence["tokens"]:
            assert len(token["gates"]) == 2 and abs(token["gate"] - sum(token["gates"]) / 2) < 2e-3
            assert len(token["experts"]) == 3 and sum(w for _, w in token["experts"]) == pytest.approx(
                1, abs=3e-3
            )
        assert "full" not in evidence


def test_full_evidence_has_the_tensors(run_dir, tmp_path):
    out = tmp_path / "preds.jsonl"
    assert (
        main(
            [
                "generate",
                "--run",
                str(run_dir),
                "--out",
                str(out),
                "--limit",
                "1",
                "--evidence",
                "full",
                *SHORT,
            ]
        )
        == 0
    )
    (record,) = lines(out)
    full = record["evidence"]["full"]
    steps = len(record["evidence"]["tokens"])
    assert len(full["gates"]) == steps and all(len(row) == 2 for row in full["gates"])
    assert all(abs(sum(weights) - 1) < 1e-2 for row in full["alpha"] for weights in row)


def test_generate_split_does_not_depend_on_the_batch_size(run_dir, data_root):
    from leadrrg.runs.files import load_run

    model, tokenizer, config = load_run(run_dir)
    studies = load_studies(config.data, "test")
    decode = DecodeConfig(max_new_tokens=6)
    generator = ReportGenerator(model, tokenizer, config)
    one = generate_split(generator, studies, decode, batch_size=1)
    two = generate_split(generator, studies, decode, batch_size=2)
    assert one == two and len(one) == 3


def test_images_mode_prints_the_report_and_sorted_probabilities(run_dir, tmp_path, capsys):
    image = write_png(tmp_path / "frontal.png", seed=1)
    assert main(["generate", "--run", str(run_dir), "--images", str(image), *SHORT]) == 0
    out = capsys.readouterr().out
    assert "Expert probabilities:" in out
    probs = [float(line.split()[-1]) for line in out.split("Expert probabilities:")[1].strip().splitlines()]
    assert len(probs) == len(EXPERTS) and probs == sorted(probs, reverse=True)
    args = ["generate", "--run", str(run_dir), "--images", str(image), str(image), "--json", "--evidence"]
    assert main([*args, *SHORT]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["expert_probs"]) == set(EXPERTS) and isinstance(result["report"], str)
    assert len(result["findings"]) == 14 and len(result["images"]) == 2
    assert all(len(token["gates"]) == 2 for token in result["evidence"]["tokens"])


def test_errors_are_clear(run_dir, data_root, tmp_path, capsys):
    def error(*args: str) -> str:
        assert main(["generate", *args]) == 2
        return capsys.readouterr().err

    out = tmp_path / "preds.jsonl"
    assert "does not exist" in error("--run", str(tmp_path / "nope"), "--out", str(out))
    (tmp_path / "empty_run").mkdir()
    assert "no model.safetensors" in error("--run", str(tmp_path / "empty_run"), "--out", str(out))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert "bad.png" in error("--run", str(run_dir), "--images", str(bad))
    image = write_png(tmp_path / "ok.png", seed=2)
    assert "at most 2 view" in error("--run", str(run_dir), "--images", *[str(image)] * 3)
    assert "only decode.* and data.*" in error(
        "--run", str(run_dir), "--out", str(out), "--set", "model.max_views=1"
    )
    assert "--out is required" in error("--run", str(run_dir))
    assert "split" in error(
        "--run", str(run_dir), "--data", str(data_root), "--split", "nope", "--out", str(out)
    )
    assert not out.exists()
