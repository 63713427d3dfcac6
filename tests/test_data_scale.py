"""Data loading at scale: the header check runs once per DDP run (each process checks a share), the main process
labels and the others receive its labels, `build_task` says what it is doing, and the cached path resolution
matches `Path.resolve`."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from make_mimic_root import make_mimic_root  # noqa: E402

from leadrrg.data.records import forget_resolved_paths, real_path  # noqa: E402
from tests.test_train_helpers import tiny_config  # noqa: E402

SETTINGS = ("data.format=mimic_cxr", "data.skip_bad_images=true", "train.batch_size=2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _root(tmp_path: Path) -> tuple[Path, str]:
    """A 60-entry placeholder MIMIC root (no label file: the labeler fills the labels) with one broken image."""
    root = make_mimic_root(tmp_path / "mimic", entries=60)
    train = json.loads((root / "annotation.json").read_text())["train"]
    broken = root / "images" / train[3]["image_path"][0]
    broken.write_bytes(b"not an image")
    return root, str(broken.resolve())


def _worker(rank: int, port: int, root: str, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    import leadrrg.data.dataset as dataset
    from leadrrg.collectives import shutdown
    from leadrrg.train.build import build_task
    from leadrrg.train.distributed import init_distributed

    checked: list[str] = []
    original = dataset.check_image
    dataset.check_image = lambda path, *args, **kwargs: (
        checked.append(path) or original(path, *args, **kwargs)
    )
    ctx = init_distributed("cpu")
    try:
        labels = Path(out_dir) / f"labels{rank}.csv"  # a labeler cache per process: only rank 0 may write one
        task = build_task(tiny_config(root, *SETTINGS), ctx, label_cache=labels, quiet=True)
        train = task.train_dataset
        result = {
            "checked": checked,
            "bad": [path for path, _ in train.bad_images],
            "ids": [s.id for s in train.studies],
            "labels": [[None if v != v else float(v) for v in s.labels] for s in train.studies],
            "cache": labels.exists(),
        }
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown(ctx)


def test_two_gloo_processes_check_each_header_once_and_share_labels(tmp_path):
    root, broken = _root(tmp_path)
    mp.spawn(_worker, args=(_free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    annotation = json.loads((root / "annotation.json").read_text())
    images = {
        str((root / "images" / e["image_path"][0]).resolve()) for s in ("train", "val") for e in annotation[s]
    }
    checked = [set(rank["checked"]) for rank in ranks]
    assert checked[0] | checked[1] == images  # every train and val image checked...
    assert not checked[0] & checked[1]  # ...by one process only
    assert len(ranks[0]["checked"]) + len(ranks[1]["checked"]) == len(images)
    assert ranks[0]["bad"] == ranks[1]["bad"] == [broken]  # both processes drop the same image
    assert ranks[0]["ids"] == ranks[1]["ids"]
    assert ranks[0]["labels"] == ranks[1]["labels"]  # rank 1 holds rank 0's labels...
    assert [rank["cache"] for rank in ranks] == [True, False]  # ...and never ran the labeler


def test_build_task_says_what_it_is_doing(tmp_path, capsys):
    from leadrrg.collectives import DistContext
    from leadrrg.train.build import build_task

    root, _ = _root(tmp_path)
    config = tiny_config(root, *SETTINGS)
    task = build_task(config, DistContext(), label_cache=tmp_path / "labels.csv")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("leadrrg train: ")]
    said = "\n".join(lines)
    for text in ("reading the mimic_cxr data at", "labeling", "train reports", "image headers", "1 of "):
        assert text in said, said
    assert "building the model: done in" in said
    assert sum("done in" in line for line in lines) >= 4
    assert len(task.train_dataset) == len(task.train_dataset.studies)
    build_task(config, DistContext(), label_cache=tmp_path / "labels.csv", quiet=True)
    assert "leadrrg train: " not in capsys.readouterr().err


@pytest.mark.parametrize(
    "relative",
    ["a/b/img.png", "link/b/img.png", "a/b/../b/img.png", "a/b/filelink.png", "a/missing/x.png", "."],
)
def test_real_path_matches_path_resolve(tmp_path, monkeypatch, relative):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "img.png").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "b" / "filelink.png").symlink_to(tmp_path / "a" / "b" / "img.png")
    forget_resolved_paths()
    assert real_path(str(tmp_path / relative)) == str((tmp_path / relative).resolve())
    monkeypatch.chdir(tmp_path)
    assert real_path(relative) == str(Path(relative).resolve())


def test_placeholder_root_reads_as_mimic(tmp_path):
    from leadrrg.config import DataConfig
    from leadrrg.data.check import check_data

    root = make_mimic_root(tmp_path / "mimic", entries=120)
    check = check_data(DataConfig(format="mimic_cxr", root=str(root)))
    assert check.records == 120 and check.totals[2] == 120
    assert not check.missing and not check.unreadable
    assert set(check.counts) == {"train", "val", "test"}
