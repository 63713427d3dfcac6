"""The model config saved inside a weights file guards what the weights mean."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from leadrrg.errors import LeadrrgError
from leadrrg.runs.files import load_model_weights, read_safetensors, save_model_weights
from tests.test_model_helpers import build, tiny_config


def _resave_with(path, edit) -> None:
    tensors, metadata = read_safetensors(path)
    saved = json.loads(metadata["model_config"])
    edit(saved)
    save_file(load_file(path), str(path), metadata={**metadata, "model_config": json.dumps(saved)})


def test_weights_written_before_a_setting_existed_still_load(tmp_path):
    model = build(tiny_config())
    save_model_weights(model, tmp_path / "model.safetensors")
    _resave_with(tmp_path / "model.safetensors", lambda c: c["grounding"].pop("expert_warmup_steps"))
    load_model_weights(
        build(tiny_config()), tmp_path / "model.safetensors"
    )  # not compared: predates the file


def test_weights_refuse_a_config_that_changes_what_they_mean(tmp_path):
    model = build(tiny_config())
    save_model_weights(model, tmp_path / "model.safetensors")
    _resave_with(tmp_path / "model.safetensors", lambda c: c["experts"].update(readout="query"))
    with pytest.raises(
        LeadrrgError, match=r"at model\.experts\.readout .*expected the config.json the weights"
    ):
        load_model_weights(build(tiny_config()), tmp_path / "model.safetensors")
