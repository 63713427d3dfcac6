"""Start-up at scale: the image header check remembered per data root (an image unchanged in size and mtime since it
passed is not checked again; a changed, missing or failed one is), done once under DDP, and a line per start-up
stage with its seconds from the main process."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from make_mimic_root import make_mimic_root, tiny_jpeg  # noqa: E402

from leadrrg.collectives import DistContext  # noqa: E402
from leadrrg.errors import LeadrrgError  # noqa: E402
from tests.test_train_helpers import tiny_config  # noqa: E402

SETTINGS = ("data.format=mimic_cxr", "data.skip_bad_images=true", "train.batch_size=2")


@pytest.fixture
def checked(monkeypatch) -> list[str]:
    """The paths whose header is checked, in order."""
    import leadrrg.data.dataset as dataset

    paths: list[str] = []
    original = dataset.check_image
    monkeypatch.setattr(
        dataset, "check_image", lambda path, *a, **k: paths.append(path) or original(path, *a, **k)
    )
    return paths


def _images(tmp_path: Path, count: int = 6) -> list[str]:
    folder = tmp_path / "root" / "images"
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"{index}.jpg").write_bytes(tiny_jpeg())
    return [str(folder / f"{index}.jpg") for index in range(count)]


def _check(paths: list[str], root: Path, cache: Path | None) -> list[tuple[str, str]]:
    from leadrrg.data.manifests import Study
    from leadrrg.train.startup import Startup, shared_bad_images

    studies = [Study(id=str(i), split="train", images=[path], report="") for i, path in enumerate(paths)]
    return shared_bad_images(studies, 1, DistContext(), Startup(False), cache, str(root))


def test_unchanged_images_are_not_checked_again(tmp_path, checked):
    paths = _images(tmp_path)
    cache = tmp_path / "cache" / "headers.json"
    assert _check(paths, tmp_path / "root", cache) == []
    assert checked == paths and cache.is_file()
    stored = json.loads(cache.read_text())
    assert sorted(stored["files"]) == [f"images/{i}.jpg" for i in range(6)]  # relative to the root
    checked.clear()
    assert _check(paths, tmp_path / "root", cache) == []
    assert checked == []  # every file unchanged: nothing checked
    assert _check(paths, tmp_path / "root", None) == [] and checked == paths  # no cache: all checked


def test_a_changed_size_or_mtime_is_checked_again(tmp_path, checked):
    paths = _images(tmp_path)
    cache = tmp_path / "headers.json"
    _check(paths, tmp_path / "root", cache)
    Path(paths[1]).write_bytes(tiny_jpeg(size=80))  # another size
    stat = os.stat(paths[4])
    os.utime(paths[4], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime
    checked.clear()
    assert _check(paths, tmp_path / "root", cache) == []
    assert checked == [paths[1], paths[4]]
    checked.clear()
    _check(paths, tmp_path / "root", cache)
    assert checked == []  # the new stamps were recorded


def test_bad_images_are_checked_at_every_start(tmp_path, checked):
    paths = _images(tmp_path)
    cache = tmp_path / "headers.json"
    _check(paths, tmp_path / "root", cache)
    Path(paths[2]).write_bytes(b"not an image")  # a file that passed, now broken
    Path(paths[3]).unlink()
    checked.clear()
    bad = _check(paths, tmp_path / "root", cache)
    assert [path for path, _ in bad] == [paths[2], paths[3]]
    assert "does not exist" in bad[1][1]
    checked.clear()
    assert [path for path, _ in _check(paths, tmp_path / "root", cache)] == [paths[2], paths[3]]
    assert checked == [paths[2], paths[3]]  # never remembered as good
    Path(paths[2]).write_bytes(tiny_jpeg())  # fixed
    assert [path for path, _ in _check(paths, tmp_path / "root", cache)] == [paths[3]]


def test_an_unreadable_cache_file_means_checking_everything(tmp_path, checked, caplog):
    paths = _images(tmp_path)
    cache = tmp_path / "headers.json"
    cache.write_text('{"format": 1, "files": {"images/0.jp')  # torn
    assert _check(paths, tmp_path / "root", cache) == []
    assert checked == paths and "unreadable" in caplog.text
    assert len(json.loads(cache.read_text())["files"]) == 6  # rewritten whole


def test_the_cache_lives_in_the_cache_folder_one_file_per_root(tmp_path, monkeypatch):
    from leadrrg.train.startup import default_header_cache

    monkeypatch.setenv("LEADRRG_HEADER_CACHE", str(tmp_path / "headers"))
    first, second = default_header_cache(str(tmp_path / "a")), default_header_cache(str(tmp_path / "b"))
    assert first.parent == second.parent == tmp_path / "headers" / "image_headers"
    assert first != second and first == default_header_cache(str(tmp_path / "a"))
    monkeypatch.delenv("LEADRRG_HEADER_CACHE")
    monkeypatch.setenv("LEADRRG_CACHE", str(tmp_path / "cache"))
    assert default_header_cache(str(tmp_path / "a")).parent == tmp_path / "cache" / "image_headers"


def _said(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("leadrrg train: ")]


def test_each_stage_is_said_with_its_seconds(tmp_path, capsys, checked):
    from leadrrg.train.build import build_task

    root = make_mimic_root(tmp_path / "mimic", entries=40)
    config = tiny_config(root, *SETTINGS)
    build_task(config, DistContext(), label_cache=tmp_path / "labels.csv")
    cold = _said(capsys.readouterr().err)
    ends = [line for line in cold if " done in " in line]
    for stage in (
        "reading the mimic_cxr data",
        "labeling",
        "image headers",
        "tokenizer",
        "building the model",
    ):
        assert any(stage in line for line in ends), (stage, cold)
    assert any("40 records" in line for line in ends)
    summary = cold[-1]
    assert summary.startswith("leadrrg train: start-up done in ")
    for stage in ("data", "labels", "image headers", "tokenizer", "model"):
        assert f"{stage} " in summary and " s" in summary, summary
    assert checked
    checked.clear()
    build_task(config, DistContext(), label_cache=tmp_path / "labels.csv")
    warm = "\n".join(_said(capsys.readouterr().err))
    assert "unchanged since the last check (cached)" in warm and not checked
    assert "0 by the labeler" in warm  # every report's labels from the labeler cache
    build_task(config, DistContext(), label_cache=tmp_path / "labels.csv", quiet=True)
    assert not _said(capsys.readouterr().err)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    dataset.check_image = lambda path, *a, **k: checked.append(path) or original(path, *a, **k)
    ctx = init_distributed("cpu")
    result = {}
    try:
        config = tiny_config(root, *SETTINGS)
        for start in ("cold", "warm"):
            checked.clear()
            said = io.StringIO()
            with redirect_stderr(said):
                build_task(config, ctx, label_cache=Path(out_dir) / f"labels{rank}.csv")
            result[start] = {"checked": list(checked), "said": _said(said.getvalue())}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown(ctx)


def test_two_processes_check_once_then_reuse_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEADRRG_HEADER_CACHE", str(tmp_path / "headers"))  # inherited by the processes
    root = make_mimic_root(tmp_path / "mimic", entries=40)
    mp.spawn(_worker, args=(_free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    cold = [set(rank["cold"]["checked"]) for rank in ranks]
    assert cold[0] and cold[1] and not cold[0] & cold[1]  # a share each, never twice
    assert ranks[0]["warm"]["checked"] == ranks[1]["warm"]["checked"] == []  # the second start checks nothing
    assert ranks[0]["cold"]["said"] and not ranks[1]["cold"]["said"]  # the main process speaks, alone
    files = list((tmp_path / "headers").rglob("*.json"))
    assert len(files) == 1 and len(json.loads(files[0].read_text())["files"]) == len(cold[0] | cold[1])


def test_the_labeler_cache_reads_as_the_strict_reader_reads_it(tmp_path):
    import numpy as np

    from leadrrg.data.label_files import read_label_file
    from leadrrg.data.labels import labels_from_labeler, read_label_cache
    from leadrrg.data.manifests import Study

    reports = [
        "No pleural effusion.",
        "Small left pleural effusion. Mild cardiomegaly.",
        "Possible pneumonia.",
    ]
    studies = [Study(id=str(i), split="train", images=[], report=text) for i, text in enumerate(reports)]
    cache = tmp_path / "labels.csv"
    labels_from_labeler(studies, cache)
    fast, strict = read_label_cache(cache), read_label_file(cache, "report_sha256")
    assert fast.keys() == strict.keys() and len(fast) == 3
    assert all(np.array_equal(fast[key], strict[key], equal_nan=True) for key in strict)
    cache.write_text(cache.read_text().replace(",1.0", ",7.0", 1))  # a value no label takes
    with pytest.raises(LeadrrgError, match="labels.csv"):
        read_label_cache(cache)  # the strict reader names the file
