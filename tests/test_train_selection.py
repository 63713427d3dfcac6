"""Model selection: validation that generates and scores reports, RUN/best/ by a configurable metric, early
stopping with patience, and sample reports in TensorBoard."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from leadrrg.config import TrainConfig
from leadrrg.errors import LeadrrgError
from leadrrg.train.selection import ModelSelector
from leadrrg.train.state import TrainerState
from tests.test_train_helpers import make_synth, tiny_config


def test_selector_keeps_the_best_and_runs_out_of_patience(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer").mkdir()
    model, state = nn.Linear(2, 1), TrainerState()
    selector = ModelSelector(
        TrainConfig(select_metric="val_gen_hallucination_rate", eval_generate=2, early_stop_patience=2),
        tmp_path,
    )
    decisions = []
    for step, value in enumerate([0.5, 0.3, 0.3, float("nan"), 0.1], start=1):  # lower is better (auto)
        state.step = step
        with torch.no_grad():
            model.weight.fill_(step)
        decisions.append(
            selector.update(state, model, {"val_gen_hallucination_rate": value, "val_loss": 1.0})
        )
    assert decisions == [
        False,
        False,
        False,
        True,
        False,
    ]  # steps 3 and 4 do not improve: patience 2 is spent
    assert (state.best_score, state.best_score_step, state.evals_since_best) == (0.1, 5, 0)
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["step"] == 5 and best["value"] == 0.1 and best["metric"] == "val_gen_hallucination_rate"
    from safetensors.torch import load_file

    assert load_file(tmp_path / "best" / "model.safetensors")["weight"].flatten().tolist() == [5.0, 5.0]
    maximise = ModelSelector(TrainConfig(select_metric="val_loss", select_mode="max"), tmp_path)
    assert not maximise.lower


def test_selection_settings_are_checked():
    with pytest.raises(LeadrrgError, match="train.eval_generate is 0"):
        TrainConfig(select_metric="val_gen_bleu_4")
    with pytest.raises(LeadrrgError, match="train.select_metric"):
        TrainConfig(select_metric="bleu")
    with pytest.raises(LeadrrgError, match="select_metric is empty"):
        TrainConfig(early_stop_patience=2)


def test_training_generates_scores_selects_and_stops_early(tmp_path):
    from leadrrg.runs.files import load_run
    from leadrrg.train.loop import train

    data_root = make_synth(tmp_path / "data", train=8, val=2)
    config = tiny_config(
        data_root,
        "train.max_steps=4",
        "train.eval_every=1",
        "train.save_every=0",
        "train.eval_generate=2",
        "train.select_metric=val_gen_bleu_4",
        "train.select_mode=min",  # BLEU hardly moves in a few steps: min makes a tie (no improvement) likely
        "train.early_stop_patience=1",
        "decode.max_new_tokens=6",
    )
    run_dir = tmp_path / "run"
    summary = train(config, run_dir, quiet=True)
    records = [json.loads(line) for line in (run_dir / "logs.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "val"]
    assert all(
        {"val_gen_ce14_micro_f1", "val_gen_bleu_4", "val_gen_hallucination_rate"} <= r.keys() for r in evals
    )
    values = [r["val_gen_bleu_4"] for r in evals]
    best = json.loads((run_dir / "best" / "best.json").read_text())
    assert best["value"] == min(values) == summary["best_score"]
    assert best["step"] == summary["best_score_step"] == evals[values.index(min(values))]["step"]
    if summary["stopped_early"]:  # the evaluation after the best did not improve: patience 1 is spent
        assert summary["steps"] == evals[-1]["step"] == best["step"] + 1 < 4
    else:
        assert summary["steps"] == 4
    state = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == summary["steps"] and state["best_score_step"] == best["step"]
    model, _, _ = load_run(run_dir / "best")  # RUN/best/ is a run directory of its own
    assert not model.training

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    assert (
        "val/val_gen_bleu_4" in events.Tags()["scalars"]
        and "val/samples/text_summary" in events.Tags()["tensors"]
    )


def test_a_run_that_stopped_early_is_not_trained_further_on_resume_unless_patience_grows(tmp_path):
    from leadrrg.config import apply_overrides
    from leadrrg.train.loop import train

    data_root = make_synth(tmp_path / "data", train=8, val=2)
    config = tiny_config(
        data_root,
        "train.max_steps=2",
        "train.eval_every=1",
        "train.save_every=0",
        "train.select_metric=val_loss",
    )
    run_dir = tmp_path / "run"
    train(config, run_dir, quiet=True)
    state_file = run_dir / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["evals_since_best"] = 2  # as the checkpoint of a run stopped by patience 2 has it
    state_file.write_text(json.dumps(state))

    longer = apply_overrides(config, ["train.max_steps=4", "train.early_stop_patience=2"])
    summary = train(longer, run_dir, resume=True, quiet=True)
    assert summary["stopped_early"] and summary["steps"] == 2
    more_patience = apply_overrides(config, ["train.max_steps=4", "train.early_stop_patience=5"])
    assert train(more_patience, run_dir, resume=True, quiet=True)["steps"] == 4
