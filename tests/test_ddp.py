"""DDP on two gloo processes: parameters agree across ranks and match one process with the same global
batch; only rank 0 writes the run directory."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from leadrrg.train.checkpoint import weights_to_save
from leadrrg.train.distributed import DistContext, EpochShardSampler
from leadrrg.train.task import build_task
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
    from leadrrg.train.distributed import init_distributed, shutdown

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
    assert moved > 1e-3 and gap < 1e-5, (moved, gap)  # trained, and the same training


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
