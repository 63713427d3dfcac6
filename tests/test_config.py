import json

import pytest

from leadrrg.config import (
    RunConfig,
    apply_overrides,
    from_dict,
    load_config,
    load_preset,
    load_run_config,
    preset_names,
    save_config,
    to_dict,
)
from leadrrg.errors import LeadrrgError


def test_round_trip_through_json(tmp_path):
    config = apply_overrides(RunConfig(), ["model.injection.fusion=none", "train.max_steps=7"])
    save_config(config, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text())["model"]["injection"]["fusion"] == "none"


def test_overrides_are_typed():
    config = apply_overrides(RunConfig(), ["train.lr=0.5", "train.max_steps=3", "model.vision.freeze=true"])
    assert (
        config.train.lr == 0.5
        and isinstance(config.train.max_steps, int)
        and config.model.vision.freeze is True
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.injection.fusion=deep", "expected one of: layerwise, input, aux, none"),
        ("train.max_stepz=3", "unknown config key 'train.max_stepz'"),
        ("train.max_steps=three", "must be an integer"),
        ("train.max_steps", "key.path=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(LeadrrgError, match=message):
        apply_overrides(RunConfig(), [override])


def test_unknown_keys_in_dict_fail():
    with pytest.raises(LeadrrgError, match="unknown config key 'model.visoin'"):
        from_dict(RunConfig, {"model": {"visoin": {}}})


def test_every_preset_loads():
    assert "demo" in preset_names()
    for name in preset_names():
        config = load_preset(name)
        assert config.preset == name
        assert to_dict(config)["model"]["experts"]["names"]


def test_unknown_preset_lists_valid_names():
    with pytest.raises(LeadrrgError, match="expected one of: .*demo"):
        load_preset("nope")


def test_a_run_saved_before_a_default_changed_keeps_its_old_behaviour(tmp_path):
    data = to_dict(RunConfig())
    del data["model"]["experts"]["readout"]  # saved before experts.readout existed (the paper's readout)
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert load_run_config(tmp_path / "config.json").model.experts.readout == "query"
    save_config(RunConfig(), tmp_path / "new.json")
    assert load_run_config(tmp_path / "new.json").model.experts.readout == RunConfig().model.experts.readout


def test_the_paper_preset_and_the_paper_bench_variant_are_one_recipe():
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.experiments.variants import PAPER

    preset, variant = load_preset("lead_paper"), apply_overrides(load_preset("demo"), list(PAPER))
    assert preset.model == variant.model and preset.decode == variant.decode
    assert preset.model.grounding.counterfactual == 0 and preset.model.grounding.expert_warmup_steps == 0
    assert preset.decode.expert_threshold == 0  # its decoder reads its own soft p


def test_a_run_saved_before_a_default_changed_keeps_what_it_was_trained_with(tmp_path):
    from leadrrg.config import load_run_config, save_config

    config = RunConfig()
    save_config(config, tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    del data["model"]["grounding"]["counterfactual"], data["decode"]["expert_threshold"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    old = load_run_config(tmp_path / "config.json")
    assert old.model.grounding.counterfactual == 0 and old.decode.expert_threshold == 0
    assert config.model.grounding.counterfactual == 0.8 and config.decode.expert_threshold == 0.7
