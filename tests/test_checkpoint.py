"""Run directories: layout, safetensors round trips with strict keys, atomic swaps, and resume that ends
where an uninterrupted run ends."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from leadrrg.errors import LeadrrgError
from leadrrg.runs.files import load_model_weights, load_run, save_model_weights
from leadrrg.train import checkpoint as ckpt
from leadrrg.train.loop import train
from tests.test_train_helpers import make_synth, tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "data")


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    summary = train(tiny_config(data_root), run_dir, quiet=True)
    return run_dir, summary


def test_run_directory_layout(trained_run):
    run_dir, summary = trained_run
    assert summary["steps"] == 4 and summary["final_val_loss"] is not None
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "checkpoint",
        "config.json",
        "logs.jsonl",
        "model.safetensors",
        "provenance.json",
        "tb",
        "thresholds.json",  # per-finding thresholds calibrated on val at the end of training
        "tokenizer",
    ]
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    state = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 1 and len(state["rng"]) == 1
    assert state["scheduler"]["name"] == "warmup_cosine" and state["optimizer"]["param_names"]
    records = [json.loads(line) for line in (run_dir / "logs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4]
    assert all("studies_per_s" in r for r in records if r["kind"] == "train")
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.bin"))  # no pickles


def test_load_run_gives_identical_logits(trained_run, data_root):
    from leadrrg.collectives import DistContext
    from leadrrg.data.collate import move_batch
    from leadrrg.train.build import build_task, make_val_loader

    run_dir, _ = trained_run
    model, tokenizer, config = load_run(run_dir)
    assert not model.training and config.data.root == str(data_root.resolve())
    again, _, _ = load_run(run_dir)
    task = build_task(config, DistContext(), tokenizer)
    batch = move_batch(next(iter(make_val_loader(task))), "cpu")
    with torch.no_grad():
        first, second = model(**batch), again(**batch)
    assert torch.equal(first["expert_logits"], second["expert_logits"])
    assert torch.equal(first["loss"], second["loss"])
    # The saved weights are the trained ones, not the seeded initial ones (build_task's fresh model).
    initial, trained = task.model.state_dict(), model.state_dict()
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[k], trained[k]) for k in trained)
    with torch.no_grad():
        assert not torch.equal(task.model.eval()(**batch)["loss"], first["loss"])


def test_load_run_errors_name_the_missing_file(tmp_path):
    with pytest.raises(LeadrrgError, match="config.json is missing"):
        load_run(tmp_path)


class Frozen(nn.Module):
    """A frozen 'pretrained' base, trainable new layers and a tied pair of weights."""

    def __init__(self):
        super().__init__()
        self.base = nn.Linear(3, 3)
        self.base.requires_grad_(False)
        self.head = nn.Linear(3, 4, bias=False)
        self.embed = nn.Embedding(4, 3)
        self.head.weight = self.embed.weight  # tied
        self.register_buffer("running", torch.arange(3.0))


def test_weights_skip_frozen_and_tied_and_load_strictly(tmp_path):
    model = Frozen()
    save_model_weights(model, tmp_path / "m.safetensors")
    saved = load_file(tmp_path / "m.safetensors")
    assert sorted(saved) == ["head.weight", "running"]  # base frozen, embed.weight an alias of head.weight
    other = Frozen()
    other.base.load_state_dict(model.base.state_dict())
    load_model_weights(other, tmp_path / "m.safetensors")
    assert torch.equal(other.head.weight, model.embed.weight) and other.head.weight is other.embed.weight
    # Strict: an unexpected key or a missing trainable key is an error naming the keys.
    save_file({**saved, "extra.weight": torch.zeros(1)}, tmp_path / "extra.safetensors")
    with pytest.raises(LeadrrgError, match="unexpected keys \\['extra.weight'\\]"):
        load_model_weights(other, tmp_path / "extra.safetensors")
    save_file({"running": saved["running"]}, tmp_path / "missing.safetensors")
    with pytest.raises(LeadrrgError, match="2 missing keys \\['embed.weight', 'head.weight'\\]"):
        load_model_weights(other, tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LeadrrgError, match="not a readable safetensors"):
        load_model_weights(other, tmp_path / "bad.safetensors")


def test_optimizer_and_rng_state_round_trip(tmp_path):
    from leadrrg.config import TrainConfig
    from leadrrg.train.optim import build_optimizer

    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    optimizer, names = build_optimizer(model, TrainConfig())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    tensors, saved = ckpt.optimizer_state_to_save(optimizer, names)
    assert set(tensors) == {f"{n}/{k}" for n in names for k in ("step", "exp_avg", "exp_avg_sq")}
    save_file(tensors, tmp_path / "o.safetensors")
    fresh, _ = build_optimizer(model, TrainConfig())
    ckpt.load_optimizer_state(
        fresh, names, load_file(tmp_path / "o.safetensors"), json.loads(json.dumps(saved))
    )
    for param in model.parameters():
        a, b = optimizer.state[param], fresh.state[param]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LeadrrgError, match="different trainable parameters"):
        ckpt.load_optimizer_state(fresh, names[:1], tensors, saved)

    state = json.loads(json.dumps(ckpt.capture_rng_state()))
    expected = (torch.rand(3), torch.randint(0, 100, (3,)))
    ckpt.restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.randint(0, 100, (3,)), expected[1])


def test_checkpoint_swap_survives_a_kill_between_renames(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    # A kill after the old checkpoint was moved aside and before the new one was renamed in:
    os.replace(run_dir / "checkpoint", run_dir / ".ckpt-old")
    (run_dir / ".ckpt-tmp").mkdir()
    (run_dir / ".ckpt-tmp" / "model.safetensors").write_bytes(b"half written")
    recovered = ckpt.recover_checkpoint_dir(run_dir)
    assert recovered == run_dir / "checkpoint" and (recovered / "trainer_state.json").is_file()
    assert not (run_dir / ".ckpt-old").exists() and not (run_dir / ".ckpt-tmp").exists()


def test_resume_after_a_kill_matches_an_uninterrupted_run(data_root, tmp_path):
    # Dropout (the global RNG), augmentation (seeded per item), loader workers, a warmup + cosine schedule
    # and an epoch boundary (24 studies, batch 4: 6 batches per epoch) all have to line up.
    config = tiny_config(
        data_root,
        "train.max_steps=8",
        "train.save_every=3",
        "train.eval_every=4",
        "model.decoder.dropout=0.1",
        "data.num_workers=1",
    )
    straight = train(config, tmp_path / "straight", quiet=True)

    def kill_at_step_5(step, record):
        if step == 5:  # two steps past the checkpoint at 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", callbacks=[kill_at_step_5], quiet=True)
    assert json.loads((tmp_path / "resumed/checkpoint/trainer_state.json").read_text())["step"] == 3
    with pytest.raises(LeadrrgError, match="already exists"):
        train(config, tmp_path / "resumed", quiet=True)
    resumed = train(config, tmp_path / "resumed", resume=True, quiet=True)
    assert resumed["steps"] == straight["steps"] == 8
    a, b = (
        load_file(tmp_path / "straight/model.safetensors"),
        load_file(tmp_path / "resumed/model.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    oa = load_file(tmp_path / "straight/checkpoint/optimizer.safetensors")
    ob = load_file(tmp_path / "resumed/checkpoint/optimizer.safetensors")
    for key in oa:
        torch.testing.assert_close(oa[key], ob[key], rtol=0, atol=1e-6, msg=key)
    assert resumed["final_val_loss"] == pytest.approx(straight["final_val_loss"], abs=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed/logs.jsonl").read_text().splitlines()]
    assert (
        steps == sorted(steps) and steps.count(4) == 2
    )  # train + val record, none duplicated by the restart


def test_resume_needs_a_checkpoint_and_the_same_model(data_root, tmp_path, trained_run):
    with pytest.raises(LeadrrgError, match="not a leadrrg run"):
        train(tiny_config(data_root), tmp_path / "nothing", resume=True)
    changed = tiny_config(data_root, "model.decoder.num_layers=3")
    with pytest.raises(LeadrrgError, match="model.decoder.num_layers"):
        train(changed, trained_run[0], resume=True)


def test_a_run_stopped_before_its_first_checkpoint_keeps_its_logs(data_root, tmp_path):
    config = tiny_config(data_root, "train.max_steps=2", "train.save_every=0", "train.eval_every=0")

    def stop_at_step_1(step, record):
        raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir, callbacks=[stop_at_step_1], quiet=True)
    assert not (run_dir / "checkpoint").exists()
    records = [json.loads(line) for line in (run_dir / "logs.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1)]
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tb").iterdir())
    # --resume starts it again from step 0; the first attempt's records move aside, none is deleted.
    assert train(config, run_dir, resume=True, quiet=True)["steps"] == 2
    steps = [json.loads(line)["step"] for line in (run_dir / "logs.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 2]  # train, train, val
    superseded = (run_dir / "logs.superseded.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in superseded] == records
