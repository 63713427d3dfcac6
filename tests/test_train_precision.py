"""GPU-readiness switches of training, checked on CPU: fp16 with a GradScaler, torch.compile wiring, the
decoder's attention implementation."""

from __future__ import annotations

import json

import pytest
import torch

from leadrrg.config import apply_overrides
from leadrrg.errors import LeadrrgError
from leadrrg.train.step import make_grad_scaler, resolve_precision
from tests.test_train_helpers import make_synth, tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "data", train=8, val=2)


def test_precision_resolves_per_device():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("fp16", cpu) == "fp16"
    assert make_grad_scaler("fp16", cpu).is_enabled() and not make_grad_scaler("bf16", cpu).is_enabled()


def test_fp16_trains_with_a_grad_scaler_and_resumes_its_scale(data_root, tmp_path):
    from leadrrg.train.loop import train

    config = tiny_config(data_root, "train.precision=fp16", "train.max_steps=2", "train.eval_every=0")
    summary = train(config, tmp_path / "run", quiet=True)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert summary["steps"] == 2 and state["grad_scaler"]["scale"] > 0  # the loss scale is checkpointed
    records = [json.loads(line) for line in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if r["kind"] == "train")
    resumed = train(apply_overrides(config, ["train.max_steps=3"]), tmp_path / "run", resume=True, quiet=True)
    assert resumed["steps"] == 3


def test_train_compile_compiles_the_module_the_steps_call(data_root, tmp_path, monkeypatch):
    from leadrrg.train.loop import train

    compiled = []

    def spy(model):
        compiled.append(model)
        return model

    monkeypatch.setattr("leadrrg.train.loop.compile_for_training", spy)
    config = tiny_config(data_root, "train.compile=true", "train.max_steps=1", "train.eval_every=0")
    assert train(config, tmp_path / "run", quiet=True)["steps"] == 1
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    assert train(apply_overrides(config, ["train.compile=false"]), tmp_path / "off", quiet=True)["steps"] == 1
    assert len(compiled) == 1  # off by default


@pytest.mark.slow
def test_train_compile_really_compiles(data_root, tmp_path):
    from leadrrg.train.loop import train

    try:
        torch.compile(torch.nn.Linear(2, 2))(torch.ones(1, 2))
    except Exception as exc:  # no C++ compiler, unsupported platform
        pytest.skip(f"torch.compile is unusable here: {exc}")
    config = tiny_config(data_root, "train.compile=true", "train.max_steps=2", "train.eval_every=0")
    assert train(config, tmp_path / "run", quiet=True)["steps"] == 2


def test_decoder_attention_implementation_is_selectable(data_root):
    from leadrrg.collectives import DistContext
    from leadrrg.train.build import build_task

    config = tiny_config(data_root, "model.decoder.attn_implementation=eager")
    assert build_task(config, DistContext()).model.lm.config._attn_implementation == "eager"
    with pytest.raises(LeadrrgError, match="attn_implementation"):
        tiny_config(data_root, "model.decoder.attn_implementation=fast")
