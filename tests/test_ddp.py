"""DDP on two gloo processes: parameters agree across ranks and match one process with the same global
batch; only rank 0 writes the run directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from leadrrg.collectives import DistContext
from leadrrg.runs.files import weights_to_save
from leadrrg.train.build import build_task
from leadrrg.train.distributed import EpochShardSampler, epoch_seed
from tests.test_train_helpers import make_synth, tiny_config

# Reports of unequal lengths (not truncated): the step's LM loss is the mean over every token of the global
# batch, so two processes of batch 2 must train exactly as one process of batch 4.
STEPS = ["data.max_report_tokens=96", "train.max_steps=3", "train.eval_every=0", "train.save_every=3"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_once(config, run_dir, ctx):
    from leadrrg.train.loop import fit

    task = build_task(config, ctx)  # augmentation on: it is seeded per global position, not per process
    fit(task, run_dir, ctx, quiet=True)
    return task.model


def _worker(
    rank: int, world_size: int, port: int, data_root: str, out_dir: str, extra: tuple[str, ...] = ()
) -> None:
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
        config = tiny_config(data_root, *STEPS, "train.batch_size=2", *extra)
        model = _train_once(config, os.path.join(out_dir, "run"), ctx)
        tensors, _ = weights_to_save(model)
        save_file(tensors, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        shutdown(ctx)


def test_sampler_shards_cover_the_global_batch():
    single = EpochShardSampler(10, seed=3)
    ranks = [EpochShardSampler(10, seed=3, rank=r, world_size=2) for r in range(2)]
    for sampler in (single, *ranks):
        sampler.set_epoch(1)
    order = single.epoch_indices()
    for k in range(2):  # global batch k of 4 = rank 0's batch k of 2 + rank 1's batch k of 2
        shards = [r.epoch_indices()[2 * k : 2 * k + 2] for r in ranks]
        assert sorted(shards[0] + shards[1]) == sorted(order[4 * k : 4 * k + 4])
    single.set_epoch(2)
    assert single.epoch_indices() != order  # a new order each epoch...
    single.set_epoch(1, start=3)
    assert list(single) == order[3:]  # ...and the same order again for the same (seed, epoch)


def test_sampler_position_is_global_across_world_sizes():
    # 10 studies, 4 read: two ranks from global position 4 read the rest (the odd tail left out), each study
    # with the augmentation seed a single process gives it at that position.
    single = EpochShardSampler(10, seed=3, item_seeds=True)
    single.set_epoch(0, start=4)
    ranks = [EpochShardSampler(10, seed=3, rank=r, world_size=2, item_seeds=True) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(0, start=4)
    assert [len(r) for r in ranks] == [3, 3]
    dealt = sorted(pair for r in ranks for pair in r)
    assert dealt == sorted(list(single)) == sorted(zip(single.epoch_order()[4:], [s for _, s in single]))
    three = [EpochShardSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for sampler in three:
        sampler.set_epoch(0, start=4)
    assert sorted(i for r in three for i in r) == sorted(single.epoch_order()[4:])


def test_resume_refuses_another_seed():
    from leadrrg.config import TrainConfig
    from leadrrg.errors import LeadrrgError
    from leadrrg.train.state import resumed_trainer_state

    saved = {"step": 2, "epoch": 1, "samples_in_epoch": 8, "seed": 0, "epoch_seed": epoch_seed(0, 1)}
    assert resumed_trainer_state(saved, TrainConfig(seed=0), Path("ckpt")).samples_in_epoch == 8
    with pytest.raises(LeadrrgError, match="resume with train.seed=0"):
        resumed_trainer_state(saved, TrainConfig(seed=1), Path("ckpt"))
    old = {"step": 2, "epoch": 0, "batch_in_epoch": 3, "world_size": 2}  # format 1: per-process batches
    assert resumed_trainer_state(old, TrainConfig(batch_size=4), Path("ckpt")).samples_in_epoch == 24


def test_two_gloo_processes_match_one_process(tmp_path):
    data_root = make_synth(tmp_path / "data", train=16, val=4)
    mp.spawn(_worker, args=(2, _free_port(), str(data_root), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert (tmp_path / "run" / "model.safetensors").is_file()  # written once, by rank 0
    assert not list(tmp_path.glob("run*/.ckpt-*"))

    config = tiny_config(data_root, *STEPS, "train.batch_size=4")
    initial, _ = weights_to_save(build_task(config, DistContext()).model)
    reference, _ = weights_to_save(_train_once(config, tmp_path / "single", DistContext()))
    assert reference.keys() == rank0.keys() == load_file(tmp_path / "run" / "model.safetensors").keys()
    moved = max((reference[k] - initial[k]).abs().max().item() for k in reference)
    gap = max((reference[k] - rank0[k]).abs().max().item() for k in reference)
    # DDP adds the same per-token loss terms as one process, in another order. How far reordering a float32 sum moves
    # the weights depends on the CPU's kernels (1.4e-5 on a Sapphire Rapids Xeon, 7e-6 on Zen 3), so the bound
    # is measured here: one process accumulating two batches of 2 reorders the same sum in the same way.
    accumulated = tiny_config(data_root, *STEPS, "train.batch_size=2", "train.grad_accum_steps=2")
    control, _ = weights_to_save(_train_once(accumulated, tmp_path / "accumulated", DistContext()))
    reordering = max((reference[k] - control[k]).abs().max().item() for k in reference)
    print(f"moved {moved:.3g}, DDP gap {gap:.3g}, accumulation gap {reordering:.3g}")
    assert moved > 1e-3, moved  # trained...
    # ...and the same training: within what reordering the sum changes (plus float32 resolution of the weights).
    assert gap <= 4 * reordering + 1e-3 * moved, (gap, reordering, moved)


def test_two_gloo_processes_train_an_hf_vision_encoder(tmp_path):
    # AutoModel keeps a pooler whose parameters never get gradients; DDP used to fail at step 2 on both ranks.
    from tests.test_model_parts import _tiny_hf_vision_model

    _tiny_hf_vision_model("vit").save_pretrained(tmp_path / "vit")
    data_root = make_synth(tmp_path / "data", train=8, val=2)
    extra = (
        "model.vision.name=hf",
        f"model.vision.pretrained_path={tmp_path / 'vit'}",
        "model.vision.image_size=32",
        "model.visual_pool=1",
    )
    mp.spawn(_worker, args=(2, _free_port(), str(data_root), str(tmp_path), extra), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert any(
        key.startswith("vision.encoder.model.") for key in rank0
    )  # the encoder trained, on both ranks alike
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def _record_ids(task, consumed: list[str]):
    """Wrap the task's collator so every training study id it batches is appended to `consumed`."""
    train_ids = {study.id for study in task.train_dataset.studies}
    collate = task.collator

    def recording(items):
        batch = collate(items)
        consumed.extend(i for i in batch["ids"] if i in train_ids)  # validation batches pass here too
        return batch

    task.collator = recording
    return task


def _resume_worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    """Run a: 1 process (batch 4) for 3 steps, then 2 processes (batch 3) to step 5. Run b: 2 processes (batch 3)
    for 2 steps, then 1 process (batch 4) to step 5. Each phase's consumed study ids go to a JSON file."""
    import json

    import torch.distributed as dist

    from leadrrg.train.loop import fit

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    from leadrrg.collectives import shutdown
    from leadrrg.train.distributed import init_distributed

    ctx = init_distributed("cpu")
    single = DistContext()

    def phase(name: str, run: str, context, batch: int, steps: int, resume: bool) -> None:
        config = tiny_config(
            data_root,
            f"train.batch_size={batch}",
            f"train.max_steps={steps}",
            "train.eval_every=0",
            "train.save_every=100",
            "train.log_every=100",
        )
        consumed: list[str] = []
        task = _record_ids(build_task(config, context), consumed)
        run_dir = os.path.join(out_dir, run)
        fit(task, run_dir, context, Path(run_dir, "checkpoint") if resume else None, quiet=True)
        with open(os.path.join(out_dir, f"{name}-rank{context.rank}.json"), "w") as handle:
            json.dump(consumed, handle)

    try:
        if rank == 0:
            phase("a1", "a", single, batch=4, steps=3, resume=False)
        dist.barrier()
        phase("a2", "a", ctx, batch=3, steps=5, resume=True)
        phase("b1", "b", ctx, batch=3, steps=2, resume=False)
        if rank == 0:
            phase("b2", "b", single, batch=4, steps=5, resume=True)
        dist.barrier()
    finally:
        shutdown(ctx)


def test_resume_across_world_and_batch_size_reads_each_study_once(tmp_path):
    # 24 studies: 3 steps of 4 + 2 steps of 2 x 3 is one epoch, as is 2 steps of 2 x 3 + 3 steps of 4.
    import json

    data_root = make_synth(tmp_path / "data", train=24, val=2)
    mp.spawn(_resume_worker, args=(_free_port(), str(data_root), str(tmp_path)), nprocs=2, join=True)
    every = sorted(s.id for s in build_task(tiny_config(data_root), DistContext()).train_dataset.studies)

    def read(name):
        return json.loads((tmp_path / f"{name}.json").read_text())

    for run in ("a", "b"):
        consumed = [i for name in sorted(tmp_path.glob(f"{run}[12]-rank*.json")) for i in read(name.stem)]
        assert sorted(consumed) == every, run  # the whole epoch, each study exactly once
        state = json.loads((tmp_path / run / "checkpoint" / "trainer_state.json").read_text())
        assert state["step"] == 5 and (state["epoch"], state["samples_in_epoch"]) == (0, 24)
    assert len(read("a1-rank0")) == 12 and len(read("a2-rank0")) == len(read("a2-rank1")) == 6
    assert len(read("b1-rank0")) == len(read("b1-rank1")) == 6 and len(read("b2-rank0")) == 12


def _diverging_worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    """Rank 1's loss turns NaN at step 2; each rank writes the error it stopped with."""
    from leadrrg.errors import LeadrrgError
    from leadrrg.train.loop import fit

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    from leadrrg.collectives import shutdown
    from leadrrg.train.distributed import init_distributed

    ctx = init_distributed("cpu")
    try:
        config = tiny_config(data_root, "train.batch_size=2", "train.max_steps=4", "train.eval_every=0")
        task = build_task(config, ctx)
        forward, calls = task.model.forward, []

        def nan_at_step_2(*args, **kwargs):
            out = forward(*args, **kwargs)
            calls.append(1)
            if rank == 1 and len(calls) == 2:
                out = {**out, "loss": out["loss"] * float("nan"), "lm_loss": out["lm_loss"] * float("nan")}
            return out

        task.model.forward = nan_at_step_2
        try:
            fit(task, os.path.join(out_dir, "run"), ctx, quiet=True)
            message = "finished"
        except LeadrrgError as exc:
            message = str(exc)
        Path(out_dir, f"error{rank}.txt").write_text(message)
    finally:
        shutdown(ctx)


def test_divergence_on_one_rank_stops_every_rank_with_the_same_error(tmp_path):
    import time

    data_root = make_synth(tmp_path / "data", train=8, val=2)
    context = mp.spawn(
        _diverging_worker, args=(_free_port(), str(data_root), str(tmp_path)), nprocs=2, join=False
    )
    deadline = time.monotonic() + 240  # a rank left waiting in a collective would hang: fail instead
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a rank hung after another rank's loss turned non-finite")
    errors = [(tmp_path / f"error{rank}.txt").read_text() for rank in range(2)]
    assert errors[0] == errors[1], errors
    assert errors[0].startswith("training diverged: the loss is not finite at step 2 (on 1 of 2 processes)")
