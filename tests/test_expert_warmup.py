"""Stage 1 (`model.grounding.expert_warmup_steps`): vision encoder + experts alone on L_cls before joint training."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from leadrrg.collectives import DistContext
from leadrrg.data.collate import collate_images
from leadrrg.runs.files import weights_to_save
from leadrrg.train.build import build_task
from leadrrg.train.distributed import PositionSeeded
from leadrrg.train.expert_warmup import warm_up_experts
from tests.test_ddp import _free_port
from tests.test_train_helpers import make_synth, tiny_config

WARMUP = ("model.grounding.expert_warmup_steps=3", "train.batch_size=4")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("warmup") / "data", train=16, val=4)


def _warm(config, run_dir, ctx=None):
    task = build_task(config, ctx or DistContext())
    before, _ = weights_to_save(task.model)
    before = {k: v.clone() for k, v in before.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    warm_up_experts(task, run_dir, ctx or DistContext(), contextlib.nullcontext)
    after, _ = weights_to_save(task.model)
    return before, after


def test_warmup_trains_only_the_vision_encoder_and_the_experts(data_root, tmp_path):
    before, after = _warm(tiny_config(data_root, *WARMUP), tmp_path / "run")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("vision.") for k in changed) and any(k.startswith("experts.") for k in changed)
    assert not [k for k in changed if not k.startswith(("vision.", "experts."))]  # decoder, projector, gates
    records = [json.loads(line) for line in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    assert [r["warmup_step"] for r in records] == [1, 2, 3] and {r["step"] for r in records} == {0}
    assert all(r["kind"] == "expert_warmup" and r["cls_loss"] > 0 for r in records)


def test_zero_warmup_steps_change_nothing(data_root, tmp_path):
    before, after = _warm(tiny_config(data_root, "model.grounding.expert_warmup_steps=0"), tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "run" / "logs.jsonl").exists()


def test_a_model_without_experts_has_no_warmup(data_root, tmp_path):
    config = tiny_config(data_root, *WARMUP, "model.injection.fusion=none")
    before, after = _warm(config, tmp_path / "run")  # the plain LVLM keeps the default stage 1 setting
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "run" / "logs.jsonl").exists()


def test_training_runs_the_warmup_once_before_the_joint_steps(data_root, tmp_path):
    from leadrrg.train.loop import train

    config = tiny_config(data_root, *WARMUP, "train.max_steps=2", "train.save_every=2", "train.eval_every=0")
    train(config, tmp_path / "run", quiet=True)
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    assert kinds[:3] == ["expert_warmup"] * 3 and "train" in kinds[3:]
    config.train.max_steps = 4
    train(config, tmp_path / "run", resume=True, quiet=True)  # the checkpoint holds stage 1: not run again
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "run" / "logs.jsonl").read_text().splitlines()]
    assert kinds.count("expert_warmup") == 3


def _worker(rank: int, world_size: int, port: int, data_root: str, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    from leadrrg.collectives import shutdown
    from leadrrg.train.distributed import init_distributed

    ctx = init_distributed("cpu")
    try:
        config = tiny_config(data_root, *WARMUP, "train.batch_size=2")
        _, after = _warm(config, Path(out_dir) / f"run{rank}", ctx)
        save_file(after, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        shutdown(ctx)


def test_two_gloo_processes_warm_up_as_one_process(data_root, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(data_root), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    before, single = _warm(tiny_config(data_root, *WARMUP), tmp_path / "single")
    moved = max((single[k] - before[k]).abs().max().item() for k in single)
    gap = max((single[k] - rank0[k]).abs().max().item() for k in single)
    # Trained, and the same training as batch 4 on one process: two ranks add the same loss terms in another order,
    # which moves float32 weights by about 1e-5 (more on some CPUs, and AdamW amplifies it where a gradient is near
    # zero); a lost or doubled batch would move them by the order of the training itself.
    assert moved > 1e-3 and gap < 1e-2 * moved, (moved, gap)


@pytest.mark.parametrize("setting", [True, False])
def test_stage1_reads_the_images_as_stored_when_told_and_the_joint_stage_augments(
    data_root, tmp_path, setting
):
    config = tiny_config(data_root, *WARMUP, f"model.grounding.expert_warmup_augment={str(setting).lower()}")
    task = build_task(config, DistContext())
    assert task.train_dataset.augment  # data.augment=true
    seen, forward = [], task.model.classification_forward

    def spy(*args):
        seen.append(task.train_dataset.augment)  # what the loader (no workers here) reads the images with
        return forward(*args)

    task.model.classification_forward = spy
    warm_up_experts(task, tmp_path, DistContext(), contextlib.nullcontext)
    assert seen == [setting] * 3
    assert task.train_dataset.augment  # restored for the joint stage


def test_stage1_items_hold_the_images_and_targets_of_the_full_items_without_a_report(data_root):
    config = tiny_config(
        data_root, *WARMUP, "model.grounding.counterfactual=0.5", "model.experts.attributes=true"
    )
    dataset = build_task(config, DistContext()).train_dataset
    assert (
        dataset.counterfactual is not None and dataset.attributes
    )  # the full item draws edits after the images
    seeded = PositionSeeded(dataset)
    keys = [(index, 1000 + index) for index in range(len(dataset))]
    full = [seeded[key] for key in keys]
    dataset.images_only = True
    fast = [seeded[key] for key in keys]
    assert all("report" not in item and "decoder_labels" not in item for item in fast)
    reference = build_task(config, DistContext()).collator(full)
    batch = collate_images(fast)
    assert set(batch) == {"images", "view_mask", "expert_labels", "expert_attributes", "ids"}
    for key in ("images", "view_mask", "expert_attributes"):
        assert torch.equal(batch[key], reference[key]), key
    assert torch.equal(batch["expert_labels"].nan_to_num(7.0), reference["expert_labels"].nan_to_num(7.0))
    assert batch["ids"] == reference["ids"]


def test_stage1_turns_images_only_off_for_the_joint_stage(data_root, tmp_path):
    task = build_task(tiny_config(data_root, *WARMUP), DistContext())
    seen, forward = [], task.model.classification_forward

    def spy(*args):
        seen.append(task.train_dataset.images_only)
        return forward(*args)

    task.model.classification_forward = spy
    warm_up_experts(task, tmp_path, DistContext(), contextlib.nullcontext)
    assert seen == [True] * 3 and not task.train_dataset.images_only
