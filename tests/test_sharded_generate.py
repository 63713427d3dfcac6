"""The torchrun lines of docs/CLI.md (the command reference the README links), run as written on 2 gloo processes (tiny model, a few steps), and sharded
generation: one merged predictions file in input order, equal to the single-process output, resumed from part
files of another world size; the merge refuses duplicates and gaps."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.errors import LeadrrgError
from leadrrg.inference import shards
from tests.test_train_helpers import TINY_MODEL, TINY_TRAIN

README = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"  # where the torchrun lines live
# Sharded generation as the issue and generate's docstring give it (used when the README has no such line).
GENERATE_LINE = (
    "torchrun --nproc_per_node 4 -m leadrrg.cli generate --run-dir RUN --split test --out preds.jsonl"
)
SHORT_DECODE = ["--set", "decode.max_new_tokens=6"]


def readme_torchrun_lines() -> list[str]:
    lines = [m.group(1) for m in re.finditer(r"`(torchrun [^`]+)`", README.read_text(encoding="utf-8"))]
    if not any(" generate " in line for line in lines):
        lines.append(GENERATE_LINE)
    return lines


def as_tiny(line: str, data_root: Path, run_dir: Path, preds: Path) -> list[str]:
    """A README line with its paths pointed at the test's, 2 processes, a free port, and a tiny model."""
    words = shlex.split(line)
    assert words[0] == "torchrun" and "-m" in words and "leadrrg.cli" in words, line
    values = {
        "--nproc_per_node": "2",
        "--preset": "demo",
        "--data": str(data_root),
        "--run-dir": str(run_dir),
    }
    command = words[words.index("leadrrg.cli") + 1]
    values["--out"] = str(run_dir if command == "train" else preds)
    out = [values[words[i - 1]] if i > 0 and words[i - 1] in values else w for i, w in enumerate(words)]
    extra = [arg for item in TINY_MODEL + TINY_TRAIN for arg in ("--set", item)] if command == "train" else []
    extra += ["--set", "train.max_steps=2", "--quiet"] if command == "train" else SHORT_DECODE
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *out[1:], *extra]


def torchrun(argv: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def test_readme_torchrun_lines_train_and_shard_generation(tmp_path):
    from leadrrg.data.synth.generate import synthesize

    data_root = synthesize(tmp_path / "data", {"train": 8, "val": 4, "test": 7}, size=64, seed=0)
    run_dir, preds = tmp_path / "run", tmp_path / "preds.jsonl"
    lines = readme_torchrun_lines()
    train_lines = [line for line in lines if " train " in line]
    assert train_lines, "docs/CLI.md has no torchrun train line"
    torchrun(as_tiny(train_lines[0], data_root, run_dir, preds))
    assert (run_dir / "model.safetensors").is_file()

    single = tmp_path / "single.jsonl"
    assert (
        main(["generate", "--run-dir", str(run_dir), "--split", "test", "--out", str(single), *SHORT_DECODE])
        == 0
    )
    expected = single.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(expected) == 7
    # An earlier run on 3 processes was killed: its rank 0 part holds 2 studies (marked, to see they are kept)
    # and a torn line.
    kept = [json.dumps({**json.loads(line), "generated": "KEPT"}) + "\n" for line in expected[:2]]
    shards.part_path(preds, 0, 3).write_text("".join(kept) + '{"id": "torn', encoding="utf-8")

    for line in lines:
        if " generate " in line:
            torchrun(as_tiny(line, data_root, run_dir, preds))
    merged = preds.read_text(encoding="utf-8").splitlines(keepends=True)
    assert (
        merged == kept + expected[2:]
    )  # input order, resumed studies kept, the rest as one process wrote them
    assert shards.part_paths(preds) == []


def _part(out: Path, rank: int, world: int, ids: list[str]) -> None:
    lines = "".join(json.dumps({"id": i, "generated": f"report {i}"}) + "\n" for i in ids)
    shards.part_path(out, rank, world).write_text(lines, encoding="utf-8")


def test_merge_orders_and_refuses_duplicates_and_gaps(tmp_path):
    out = tmp_path / "preds.jsonl"
    _part(out, 0, 2, ["a", "c"])
    _part(out, 1, 2, ["b"])
    with pytest.raises(LeadrrgError, match=r"lack 1 of 4 studies \(first 'd'\)"):
        shards.merge(out, ["a", "b", "c", "d"], include_out=False)
    assert not out.exists() and len(shards.part_paths(out)) == 2  # nothing written, parts kept
    _part(out, 0, 3, ["c"])
    with pytest.raises(LeadrrgError, match="study 'c' is in two of the part files"):
        shards.merge(out, ["a", "b", "c"], include_out=False)
    shards.part_path(out, 0, 3).unlink()
    assert shards.merge(out, ["b", "a", "c"], include_out=False) == 3
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["b", "a", "c"]
    assert shards.part_paths(out) == []
    with pytest.raises(LeadrrgError, match="twice"):
        shards.check_unique(["x", "y", "x"], "the input")
    assert shards.my_share(list(range(7)), shards.Shard(rank=1, world_size=3)) == [1, 4]
