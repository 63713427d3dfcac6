"""`leadrrg train --print-config` with a named preset, a preset file and a full config file."""

from __future__ import annotations

import json

from leadrrg.cli import main
from leadrrg.config import load_preset, save_config


def printed(capsys, *args: str) -> dict:
    assert main(["train", *args, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_print_config_resolves_preset_data_and_overrides(capsys, tmp_path):
    config = printed(capsys, "--preset", "demo", "--data", "somewhere", "--set", "train.max_steps=7")
    assert config["preset"] == "demo" and config["data"]["root"] == "somewhere"
    assert config["train"]["max_steps"] == 7 and "decode" in config and "model" in config
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps({"train": {"max_steps": 3}}))
    from_file = printed(capsys, "--preset", str(preset))
    assert from_file["preset"] == "mine" and from_file["train"]["max_steps"] == 3
    full = tmp_path / "config.json"
    save_config(load_preset("demo"), full)
    assert printed(capsys, "--config", str(full))["model"] == config["model"]


def test_preset_file_and_out_errors(capsys, tmp_path):
    assert main(["train", "--preset", str(tmp_path / "nope.json"), "--print-config"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["train", "--preset", str(bad), "--print-config"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err
    assert main(["train", "--preset", "demo"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_log_level_is_a_top_level_option(capsys):
    assert main(["--log-level", "debug", "train", "--preset", "demo", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == "demo"
