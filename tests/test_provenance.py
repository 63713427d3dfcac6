"""provenance.json (versions, command, data manifest, base-model fingerprint) and portable runs: a moved base
model is given at load with --set model.decoder.pretrained_path=..., and a different base is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import leadrrg
from leadrrg.cli import main
from leadrrg.config import DataConfig, RunConfig
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.predictions import predictions_meta
from leadrrg.model.decoder import BACKBONES
from leadrrg.model.lead import LeadModel
from leadrrg.runs.files import save_model_weights
from leadrrg.runs.provenance import PROVENANCE_FILE, base_model_fingerprint, read_provenance
from leadrrg.train.checkpoint import init_run_dir
from tests.fixtures_data import FIXTURE_REPORTS, make_jsonl, write_png
from tests.test_model_helpers import perturb_zero_init, tiny_config, tiny_decoder


def write_base(path: Path, vocab_size: int, seed: int) -> Path:
    """A tiny random Llama saved as a local transformers directory (a "pretrained" base model)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf_config = BACKBONES.get("llama").make_config(tiny_decoder(), vocab_size, 0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A run with a LoRA decoder on a local base (untrained, as leadrrg train lays it out)."""
    root = tmp_path_factory.mktemp("portable")
    data_root = make_jsonl(root / "data", counts={"train": 2, "test": 2}, views=1)
    tokenizer = ReportTokenizer.train([findings for findings, _, _ in FIXTURE_REPORTS] * 4, vocab_size=300)
    base = write_base(root / "base", tokenizer.vocab_size, seed=0)
    decoder = tiny_decoder(backbone="llama", pretrained_path=str(base), lora_r=4, lora_dropout=0.0)
    config = RunConfig(
        model=tiny_config(decoder=decoder), data=DataConfig(format="jsonl", root=str(data_root))
    )
    config.model.max_views = 1
    config.decode.max_new_tokens = 5
    model = LeadModel(config.model, tokenizer.vocab_size, tokenizer.pad_id)
    perturb_zero_init(model)
    run = root / "run"
    init_run_dir(run, config, tokenizer)
    save_model_weights(model, run / "model.safetensors")
    return run, base, data_root


def test_provenance_records_versions_command_data_and_base(lora_run):
    run, base, data_root = lora_run
    provenance = read_provenance(run)
    assert json.loads((run / PROVENANCE_FILE).read_text()) == provenance
    assert provenance["versions"]["torch"] == torch.__version__
    assert provenance["versions"]["leadrrg"] == leadrrg.__version__
    assert set(provenance["versions"]) >= {"transformers", "peft"} and provenance["command"]
    assert provenance["device"] == "cpu"
    assert list(provenance["data_manifest"]["files"]) == ["manifest.jsonl"]
    assert len(provenance["data_manifest"]["sha256"]) == 64
    assert provenance["base_models"]["model.decoder"] == base_model_fingerprint(base)
    assert provenance["base_models"]["model.decoder"]["files"] == ["model.safetensors"]
    meta = predictions_meta(run, RunConfig().decode, [{"id": "a", "generated": "x"}])
    assert meta["decode"]["strategy"] == "greedy" and len(meta["predictions_sha256"]) == 64
    assert (
        meta["predictions_sha256"]
        != predictions_meta(run, RunConfig().decode, [{"id": "b"}])["predictions_sha256"]
    )


def test_moved_base_loads_with_an_override_and_another_base_is_refused(lora_run, tmp_path):
    run, base, data_root = lora_run
    image = write_png(tmp_path / "a.png", seed=0)
    expected = leadrrg.load(run, device="cpu").generate(str(image)).report
    moved = tmp_path / "moved"
    shutil.copytree(base, moved)
    shutil.move(str(base), str(tmp_path / "elsewhere"))  # the run's recorded path is gone
    try:
        with pytest.raises(LeadrrgError, match=r"does not exist.*--set model.decoder.pretrained_path=DIR"):
            leadrrg.load(run, device="cpu")
        generator = leadrrg.load(run, device="cpu", overrides=[f"model.decoder.pretrained_path={moved}"])
        assert generator.generate(str(image)).report == expected
        out = tmp_path / "preds.jsonl"
        args = [
            "generate",
            "--run-dir",
            str(run),
            "--out",
            str(out),
            "--set",
            f"model.decoder.pretrained_path={moved}",
        ]
        assert main(args) == 0 and len(out.read_text().splitlines()) == 2

        other = write_base(tmp_path / "other", 300, seed=1)
        with pytest.raises(LeadrrgError, match="is not the one") as caught:
            leadrrg.load(run, device="cpu", overrides=[f"model.decoder.pretrained_path={other}"])
        message = str(caught.value)
        trained = read_provenance(run)["base_models"]["model.decoder"]
        assert str(other) in message and trained["path"] in message
        assert trained["sha256"][:16] in message and base_model_fingerprint(other)["sha256"][:16] in message
        with pytest.raises(LeadrrgError, match="cannot change at load"):
            leadrrg.load(run, device="cpu", overrides=["model.decoder.hidden_size=64"])
    finally:
        shutil.move(str(tmp_path / "elsewhere"), str(base))


def test_train_resume_takes_a_moved_base_and_refuses_another(tmp_path, capsys):
    from transformers import PreTrainedTokenizerFast

    from leadrrg.constants import BOS_TOKEN, EOS_TOKEN
    from leadrrg.train.loop import train
    from tests.test_train_helpers import make_synth
    from tests.test_train_helpers import tiny_config as tiny_run_config

    data_root = make_synth(tmp_path / "data", train=4, val=2)
    tokenizer = ReportTokenizer.train([findings for findings, _, _ in FIXTURE_REPORTS] * 4, vocab_size=300)
    base = write_base(tmp_path / "base", tokenizer.vocab_size, seed=0)
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    hf.save_pretrained(base)
    lora = [f"model.decoder.pretrained_path={base}", "model.decoder.lora_r=4", "train.batch_size=2"]
    config = tiny_run_config(
        data_root, *lora, "train.max_steps=1", "train.eval_every=0", "train.save_every=1"
    )
    run = tmp_path / "run"
    train(config, run, quiet=True)
    moved = base.rename(tmp_path / "moved")
    argv = ["train", "--out", str(run), "--resume", "--quiet", "--set", "train.max_steps=2"]
    assert main(argv) == 2  # the recorded base is gone: refused, with the override to give
    assert "--set model.decoder.pretrained_path=DIR" in capsys.readouterr().err
    assert main([*argv, "--set", f"model.decoder.pretrained_path={moved}"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["decoder"]["pretrained_path"] == str(moved)
    other = write_base(tmp_path / "other", tokenizer.vocab_size, seed=1)
    assert main([*argv, "--set", "train.max_steps=3", "--set", f"model.decoder.pretrained_path={other}"]) == 2
    assert "is not the one" in capsys.readouterr().err
