"""A real SIGKILL of `leadrrg train` (a subprocess), then `--resume`: the weights and optimizer state end
identical to an uninterrupted run's. The fast test kills inside a checkpoint write, at the worst moment of the
swap (the previous checkpoint moved aside, the new one not yet renamed in); the slow ones at random times."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from leadrrg.cli import main
from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN, make_synth

STEPS = ["train.max_steps=5", "train.save_every=1", "train.eval_every=0", "model.decoder.dropout=0.1"]

# Runs `leadrrg train` with os.replace SIGKILLing the process right after its N-th call that moves a
# checkpoint directory (N = argv[1]; 0: never).
DRIVER = """
import os, signal, sys
real_replace, moves = os.replace, []
def replace(source, target):
    real_replace(source, target)
    if ".ckpt-" in str(source) + str(target) and str(target).endswith(("checkpoint", ".ckpt-old")):
        moves.append(target)
        if len(moves) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from leadrrg.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "data", train=12, val=2)


def _args(data_root, out, *extra):
    sets = [item for override in (*TINY_MODEL, *TINY_TRAIN, *STEPS) for item in ("--set", override)]
    return [
        "train",
        "--preset",
        "demo",
        "--data",
        str(data_root),
        "--out",
        str(out),
        "--quiet",
        *sets,
        *extra,
    ]


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert main(_args(data_root, run_dir)) == 0
    return run_dir


def _start(data_root, run_dir, kill_at_move: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", DRIVER, str(kill_at_move), *_args(data_root, run_dir)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _assert_identical(straight, resumed):
    for name in ("model.safetensors", "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys(), name
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def _resume(data_root, run_dir):
    assert main(["train", "--out", str(run_dir), "--resume", "--quiet"]) == 0, "resume failed"


def test_sigkill_during_a_checkpoint_swap_then_resume_is_identical(data_root, straight, tmp_path):
    run_dir = tmp_path / "run"
    # Moves: step 1 renames .ckpt-tmp in (1); step 2 moves checkpoint aside (2), killed before renaming the new one.
    done = _start(data_root, run_dir, kill_at_move=2)
    _, stderr = done.communicate(timeout=300)
    assert done.returncode == -signal.SIGKILL, stderr
    assert not (run_dir / "checkpoint").exists() and (run_dir / ".ckpt-old").is_dir()  # the worst moment
    _resume(data_root, run_dir)
    _assert_identical(straight, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_time_then_resume_is_identical(data_root, straight, tmp_path, seed):
    run_dir = tmp_path / "run"
    process = _start(data_root, run_dir, kill_at_move=0)
    deadline = time.monotonic() + 900  # start-up is slow on a loaded machine
    while not (run_dir / "logs.jsonl").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # training has started (the run directory and its logger exist)
    assert (run_dir / "logs.jsonl").is_file(), "training did not start"
    time.sleep(random.Random(seed).uniform(0.0, 3.0))
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=300)
    _resume(data_root, run_dir)
    _assert_identical(straight, run_dir)
