"""`leadrrg export`: weights and config only, world-readable, a model card with metric definitions, and an
export that loads with `leadrrg.load`."""

from __future__ import annotations

import json
import os
import stat

import leadrrg
from leadrrg.cli import main
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run


def test_export_loads_and_holds_weights_config_and_a_model_card(tmp_path, capsys):
    data = make_jsonl(tmp_path / "data", counts={"train": 2, "test": 1}, views=2)
    run = write_tiny_run(tmp_path / "run", data, max_new_tokens=6)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "optimizer.safetensors").write_bytes(b"secret state")
    (run / "logs.jsonl").write_text("{}\n")
    metrics = {"test": {"bleu_4": 0.125, "ce14_micro_f1": 0.5, "meteor": None, "meta": {"split": "test"}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert stat.S_IMODE((run / "model.safetensors").stat().st_mode) & 0o044 == 0o044  # written readable
    os.chmod(run / "model.safetensors", 0o600)  # as older runs have it

    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert "checkpoint" not in names and "logs.jsonl" not in names
    assert {
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "provenance.json",
        "tokenizer",
    } <= set(names)
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path
    card = (out / "README.md").read_text()
    assert "Research only" in card and "not be used for diagnosis" in card
    assert "| `bleu_4` | 0.1250 | BLEU-n" in card and "| `meteor` | missing |" in card
    assert "clinical efficacy over the 14 CheXpert observations" in card
    assert "manifest SHA-256" in card

    image = write_png(tmp_path / "a.png", seed=0)
    original = leadrrg.load(run, device="cpu").generate([str(image), str(image)])
    exported = leadrrg.load(out, device="cpu").generate([str(image), str(image)])
    assert exported.report == original.report and exported.expert_probs == original.expert_probs

    assert main(["export", str(run), "--out", str(run)]) == 2
    assert "is the run directory itself" in capsys.readouterr().err
