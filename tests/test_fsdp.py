"""train.strategy=fsdp (FSDP2) on two gloo processes: the same training as DDP from the same seed and data, the
same run-directory files (model, optimizer, RUN/best/), and a checkpoint that resumes under either strategy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from leadrrg.collectives import DistContext
from leadrrg.config import TrainConfig
from leadrrg.errors import LeadrrgError
from tests.test_train_helpers import make_synth, tiny_config

# Two micro-batches per step (FSDP reduce-scatters each, DDP syncs the last), validation with generated reports
# and RUN/best/ at the end of each run, all under the sharded model.
SETTINGS = [
    "train.batch_size=2",
    "train.grad_accum_steps=2",
    "train.eval_every=0",
    "train.save_every=100",
    "train.log_every=100",
    "train.eval_generate=2",
    "train.select_metric=val_loss",
    "decode.max_new_tokens=6",
    "decode.batch_size=2",
]
# What two runs that differ only in how the gradients are reduced (and the grad norm summed) agree to.
CLOSE = {"atol": 1e-5, "rtol": 1e-4}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, data_root: str, out_dir: str) -> None:
    """ddp and fsdp for 3 steps from the same seed; then the fsdp run's checkpoint resumed to step 5 under fsdp
    (resumed-fsdp) and under ddp (resumed-ddp)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule

    from leadrrg.collectives import shutdown
    from leadrrg.train import sharding
    from leadrrg.train.distributed import init_distributed
    from leadrrg.train.loop import train

    ctx = init_distributed("cpu")
    out = Path(out_dir)
    shard = sharding.shard_model

    def recording(model, context):  # which parameters end up sharded, and in how many units
        model = shard(model, context)
        units = sum(isinstance(module, FSDPModule) for module in model.modules())
        kinds = sorted({type(parameter).__name__ for parameter in model.parameters()})
        (out / f"sharded-rank{rank}.json").write_text(json.dumps({"units": units, "parameters": kinds}))
        return model

    sharding.shard_model = recording

    def config(strategy: str, steps: int):
        return tiny_config(data_root, *SETTINGS, f"train.max_steps={steps}", f"train.strategy={strategy}")

    try:
        for strategy in ("ddp", "fsdp"):
            train(config(strategy, 3), out / strategy, quiet=True)
        for strategy in ("fsdp", "ddp"):
            if rank == 0:
                shutil.copytree(out / "fsdp", out / f"resumed-{strategy}")
            dist.barrier()
            train(config(strategy, 5), out / f"resumed-{strategy}", resume=True, quiet=True)
    finally:
        shutdown(ctx)


def _spawn(*args) -> None:
    context = mp.spawn(_worker, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a rank left waiting in a collective would hang: fail instead
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("a training process hung")


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        torch.testing.assert_close(a[key], b[key], **CLOSE, msg=lambda m, key=key: f"{what} {key}: {m}")


def _val_records(run: Path) -> list[dict]:
    lines = (run / "logs.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "val"]


def test_fsdp_trains_as_ddp_and_its_checkpoint_resumes(tmp_path):
    from leadrrg.runs.files import load_run

    data_root = make_synth(tmp_path / "data", train=16, val=4)
    _spawn(_free_port(), str(data_root), str(tmp_path))
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"

    for rank in range(2):  # each of the 2 decoder layers is a unit, and the root; every parameter a shard
        sharded = json.loads((tmp_path / f"sharded-rank{rank}.json").read_text())
        assert sharded == {"units": 3, "parameters": ["DTensor"]}
    # The same training, saved as the same files: RUN/model.safetensors, the optimizer's moments, RUN/best/.
    for name in ("model.safetensors", "checkpoint/optimizer.safetensors", "best/model.safetensors"):
        _assert_close(load_file(ddp / name), load_file(fsdp / name), name)
    states = [json.loads((run / "checkpoint/trainer_state.json").read_text()) for run in (ddp, fsdp)]
    # The optimizer's names, groups and scalars, as one unsharded process saves them.
    assert states[0]["optimizer"] == states[1]["optimizer"]
    assert states[1]["step"] == 3 and states[1]["world_size"] == 2
    # Validation ran sharded on both ranks (with generation under the gathered root): the same scores.
    (ddp_val,), (fsdp_val,) = _val_records(ddp), _val_records(fsdp)
    assert "val_gen_bleu_4" in fsdp_val
    assert fsdp_val["val_loss"] == pytest.approx(ddp_val["val_loss"], rel=1e-4)

    # The fsdp checkpoint resumes under fsdp as under ddp, and both runs load for decoding.
    resumed = {s: tmp_path / f"resumed-{s}" for s in ("fsdp", "ddp")}
    for run in resumed.values():
        assert json.loads((run / "checkpoint/trainer_state.json").read_text())["step"] == 5
    at_step_3 = load_file(fsdp / "model.safetensors")
    at_step_5 = load_file(resumed["fsdp"] / "model.safetensors")
    assert max((at_step_5[k] - at_step_3[k]).abs().max().item() for k in at_step_5) > 1e-3  # it trained on
    _assert_close(at_step_5, load_file(resumed["ddp"] / "model.safetensors"), "resumed")
    for run in (fsdp / "best", resumed["fsdp"]):  # keys and checksum checked as decoding and export read them
        assert load_run(run, device="cpu")[2].train.strategy == "fsdp"


def test_strategy_is_checked_and_one_process_trains_unsharded(caplog):
    from leadrrg.train.sharding import use_fsdp

    with pytest.raises(LeadrrgError, match=r"train.strategy is 'zero'; expected one of: ddp, fsdp"):
        TrainConfig(strategy="zero")
    assert TrainConfig().strategy == "ddp"
    with caplog.at_level(logging.INFO, logger="leadrrg.train.sharding"):
        assert not use_fsdp(TrainConfig(strategy="fsdp"), DistContext())
    assert "nothing to shard" in caplog.text
