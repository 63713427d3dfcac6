"""Issue 21, training: one process per run directory (RUN/.lock), a symlinked checkpoint/ refused, an output
folder the file system refuses (read-only, full) said in one `error:` line naming it (exit 2), and Ctrl-C /
SIGTERM that save the step they stop at (audit: ../shared/research/audit/reliability.md)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.io import exclusive_lock
from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN, make_synth


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth") / "data", train=12, val=2)


def _args(data_root, out, *sets: str) -> list[str]:
    overrides = [item for value in (*TINY_MODEL, *TINY_TRAIN, *sets) for item in ("--set", value)]
    return ["train", "--preset", "demo", "--data", str(data_root), "--out", str(out), "--quiet", *overrides]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _step(run: Path) -> int:
    return json.loads((run / "checkpoint" / "trainer_state.json").read_text())["step"]


def read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` behave like a read-only mount (tests run as root, where chmod does not stop writes)."""
    root = str(folder.absolute())

    def inside(path) -> bool:
        return not isinstance(path, int) and os.path.abspath(os.fspath(path)).startswith(root)

    real_open, real_mkdir = os.open, os.mkdir

    def fake_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(_args(data_root, run, "train.max_steps=2", "train.save_every=1", "train.eval_every=0")) == 0
    return run


def test_a_second_train_into_a_run_directory_in_use_is_refused_and_nothing_is_deleted(
    data_root, tmp_path, capsys
):
    # Audit: two `train` into one --out at once both crashed and the run folder was deleted.
    out = tmp_path / "twin"
    out.mkdir()
    with exclusive_lock(out / ".lock", "run directory"):  # the first training, just started
        assert main(_args(data_root, out)) == 2
        err = capsys.readouterr().err
        assert "in use by another leadrrg process" in err and f"PID {os.getpid()}" in err
        assert "internal error" not in err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the first one's folder is untouched


def test_resume_beside_a_running_training_is_refused(trained, capsys):
    before = _snapshot(trained)
    with exclusive_lock(trained / ".lock", "run directory"):
        assert (
            main(["train", "--out", str(trained), "--resume", "--set", "train.max_steps=3", "--quiet"]) == 2
        )
    assert "in use by another leadrrg process" in capsys.readouterr().err
    assert _snapshot(trained) == before
    assert not (trained / ".lock").exists()


def test_a_symlinked_checkpoint_is_refused_before_any_save(trained, tmp_path, capsys):
    # Audit: the first save moved the link aside, the second crashed, and every later resume crashed too.
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    elsewhere = tmp_path / "elsewhere" / "checkpoint"
    elsewhere.parent.mkdir()
    (run / "checkpoint").rename(elsewhere)
    (run / "checkpoint").symlink_to(elsewhere)
    kept = _snapshot(elsewhere)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and str(run / "checkpoint") in err and "internal error" not in err
    assert (run / "checkpoint").is_symlink() and _snapshot(elsewhere) == kept

    # A run left stuck by the old code (the link moved aside to .ckpt-old) resumes; the link's target stays.
    (run / "checkpoint").unlink()
    shutil.copytree(elsewhere, run / "checkpoint")
    (run / ".ckpt-old").symlink_to(elsewhere)
    assert main(["train", "--out", str(run), "--resume", "--set", "train.max_steps=4", "--quiet"]) == 0
    assert _step(run) == 4 and not (run / ".ckpt-old").exists() and _snapshot(elsewhere) == kept


def test_a_read_only_run_directory_is_one_error_line_before_any_work(
    data_root, tmp_path, monkeypatch, capsys
):
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    assert main(_args(data_root, tmp_path / "ro" / "run")) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and str(tmp_path / "ro" / "run") in err
    assert "internal error" not in err


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(data_root, tmp_path, monkeypatch, capsys):
    # Audit: a 12 MB tmpfs gave "internal error: SafetensorError ... No space left on device (os error 28)".
    from safetensors import SafetensorError

    from leadrrg.train import checkpoint

    real, calls = checkpoint.save_file, []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SafetensorError("Error while serializing: No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full)
    run = tmp_path / "run"
    assert main(_args(data_root, run, "train.save_every=1", "train.eval_every=0")) == 2
    err = capsys.readouterr().err
    assert "cannot write the checkpoint of step 2" in err and "checkpoint of step 1 is kept" in err
    assert "internal error" not in err and "No space left" in err
    assert _step(run) == 1 and not (run / ".ckpt-tmp").exists()


def test_export_and_synth_into_a_read_only_folder_fail_before_any_work(
    trained, tmp_path, monkeypatch, capsys
):
    (tmp_path / "ro").mkdir()
    read_only(monkeypatch, tmp_path / "ro")
    assert main(["export", str(trained), "--out", str(tmp_path / "ro" / "export")]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and str(tmp_path / "ro" / "export") in err and "internal" not in err
    sizes = ["--train", "2", "--val", "0", "--test", "0", "--shift-test", "0", "--quiet"]
    assert main(["synth", "--out", str(tmp_path / "ro" / "data"), *sizes]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and str(tmp_path / "ro" / "data") in err and "internal" not in err


# --------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM: a real signal to a `leadrrg train` subprocess


def _wait_for_steps(run: Path, process: subprocess.Popen, steps: int, timeout: float = 180.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        logs = run / "logs.jsonl"
        if logs.is_file():
            records = [json.loads(line) for line in logs.read_text().splitlines() if line.endswith("}")]
            done = [r["step"] for r in records if r.get("kind") == "train"]
            if done and done[-1] >= steps:
                return done[-1]
        time.sleep(0.2)
    process.kill()
    pytest.fail("training did not reach its first steps in time")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_step_it_stops_at(data_root, tmp_path, number):
    # Audit: Ctrl-C at step >= 75 with save_every=50 kept the checkpoint of step 50 without a word; SIGTERM
    # was not handled at all.
    run = tmp_path / "run"
    sets = ["train.max_steps=100000", "train.save_every=1000", "train.eval_every=0", "train.log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "leadrrg", *_args(data_root, run, *sets)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            _wait_for_steps(run, process, 2)
            process.send_signal(number)
            code = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        stderr.seek(0)
        err = stderr.read()
    name = signal.Signals(number).name
    step = _step(run)
    assert code == 130, err
    assert f"stopped by {name} at step {step}" in err and "internal error" not in err
    assert 2 <= step < 1000  # not a save_every step: the step it stopped at
    records = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]
    assert records[-1] == {"kind": "stop", "step": step, "signal": name}
    assert max(r["step"] for r in records if r["kind"] == "train") == step
    assert not (run / ".lock").exists()
