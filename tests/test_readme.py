"""The README's commands run as written right after `make demo`: a small demo (the same command, fewer studies and
steps) in a temporary folder, then every command of the README's marked blocks in that folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL_DEMO = [
    "--train", "24", "--eval", "24", "--size", "64", "--workers", "1", "--examples", "1", "--no-meteor",
    "--set", "train.max_steps=3", "--set", "model.grounding.expert_warmup_steps=2",
    "--set", "decode.max_new_tokens=12", "--set", "train.eval_every=0",
]  # fmt: skip


def marked_block(kind: str) -> str:
    """The fenced block after `<!-- readme-test: KIND -->` in the README."""
    match = re.search(rf"<!-- readme-test: {kind} -->\s*```\w*\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, f"README has no block marked readme-test: {kind}"
    return match.group(1)


@pytest.fixture(scope="module")
def after_demo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    demo = [sys.executable, "-m", "leadrrg", "demo", "--out", "runs/demo", *SMALL_DEMO]
    done = subprocess.run(demo, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, env


def test_the_shell_commands_run_as_written(after_demo):
    folder, env = after_demo
    script = "set -euo pipefail\n" + marked_block("shell")
    done = subprocess.run(
        ["bash", "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (folder / "study.html").is_file() and (folder / "gates.png").is_file()
    assert (folder / "shift_metrics.json").is_file() and (folder / "labels.csv").is_file()


def test_the_python_example_runs_as_written(after_demo):
    folder, env = after_demo
    code = marked_block("python")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
