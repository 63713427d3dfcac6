"""`leadrrg train` end to end on a tiny SynthCXR set: the run directory, the summary, clear refusals."""

from __future__ import annotations

import json

import pytest

from leadrrg.cli import main
from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN, make_synth


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "data", train=16, val=4)


def _args(data_root, out, *extra):
    sets = [item for override in (*TINY_MODEL, *TINY_TRAIN) for item in ("--set", override)]
    return ["train", "--preset", "demo", "--data", str(data_root), "--out", str(out), *sets, *extra]


def test_cli_trains_a_few_steps_and_resumes(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data_root, out, "--set", "train.max_steps=2")) == 0
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "val loss" in printed and str(out) in printed
    for name in ("config.json", "model.safetensors", "tokenizer", "checkpoint", "logs.jsonl", "tb"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["max_steps"] == 2 and config["preset"] == "demo"
    assert config["data"]["root"] == str(data_root.resolve())

    # An existing run is never overwritten; --resume continues it (here: to more steps).
    assert main(_args(data_root, out, "--set", "train.max_steps=2")) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--set", "train.max_steps=3", "--quiet"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    # A changed learning rate on --resume applies from the resumed step (config.json records it; it is not ignored).
    assert (
        main(["train", "--out", str(out), "--resume", "--set", "train.max_steps=4", "--set", "train.lr=0.05"])
        == 0
    )
    capsys.readouterr()
    logs = [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines()]
    last = [r for r in logs if r.get("kind") == "train" and r["step"] == 4][-1]
    assert last["lr"] == pytest.approx(0.05 * last["lr_factor"])


def test_cli_errors_are_one_clear_sentence(data_root, tmp_path, capsys, monkeypatch):
    assert main(["train", "--data", str(data_root), "--out", str(tmp_path / "a")]) == 2
    assert "no --preset given" in capsys.readouterr().err
    assert main(_args(tmp_path / "nowhere", tmp_path / "b")) == 2
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()  # nothing left behind as if complete
    assert main(_args(data_root, tmp_path / "c", "--set", "train.batch_size=64")) == 2
    assert "lower train.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    (tmp_path / "e").mkdir()  # an existing empty directory is fine, and stays empty after a failure

    def fail(*args, **kwargs):
        raise RuntimeError("failed before the first checkpoint")

    monkeypatch.setattr("leadrrg.train.loop.fit", fail)
    assert main(_args(data_root, tmp_path / "e")) == 1  # the CLI's last net: one line, no traceback
    assert "internal error: RuntimeError" in capsys.readouterr().err
    assert list((tmp_path / "e").iterdir()) == []
    assert main(_args(data_root, tmp_path / "d", "--set", "train.max_stepz=1")) == 2
    assert "train.max_stepz" in capsys.readouterr().err
