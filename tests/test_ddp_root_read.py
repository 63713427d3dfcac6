"""Under DDP the data root is read once: the main process reads, splits and labels the studies and sends them to the
others (`leadrrg.train.startup.read_task_studies`). Both ranks of two gloo processes get the studies one process
reads, only rank 0 reads the root, and an error reading it ends every rank with the same message."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from make_mimic_root import make_mimic_root  # noqa: E402

from leadrrg.collectives import DistContext  # noqa: E402
from leadrrg.train.startup import Startup, _pack_studies, _unpack_studies, read_task_studies  # noqa: E402
from tests.test_train_helpers import make_synth, tiny_config  # noqa: E402

# The placeholder MIMIC root has no labels (the labeler fills them); the synth reports are kept whole (unequal lengths).
MIMIC = ("data.format=mimic_cxr", "data.skip_bad_images=true", "train.batch_size=2")
OVERRIDES = {"synth": ("data.max_report_tokens=96",), "mimic": MIMIC}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _digest(studies: list) -> list:
    """Every field of every study, JSON-comparable (NaN labels as None)."""

    def labels(row):
        if row is None:
            return None
        return [None if np.isnan(value) else float(value) for value in np.asarray(row, dtype=np.float64)]

    return [[s.id, s.split, list(s.images), s.report, labels(s.labels), s.attributes] for s in studies]


def _worker(rank: int, port: int, roots: dict[str, str], out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    torch.set_num_threads(1)
    import leadrrg.train.startup as startup
    from leadrrg.collectives import shutdown
    from leadrrg.errors import LeadrrgError
    from leadrrg.train.build import build_task, make_train_loader, set_loader_epoch
    from leadrrg.train.distributed import init_distributed

    reads: list[str] = []
    original = startup.read_records
    startup.read_records = lambda data, *a, **k: reads.append(data.root) or original(data, *a, **k)
    ctx = init_distributed("cpu")
    result: dict = {}
    try:
        for name in ("synth", "mimic"):
            root = roots[name]
            reads.clear()
            overrides = OVERRIDES[name]
            task = build_task(
                tiny_config(root, *overrides), ctx, label_cache=Path(out_dir) / "labels.csv", quiet=True
            )
            studies = [*task.train_dataset.studies, *(task.val_dataset.studies if task.val_dataset else [])]
            result[name] = {"reads": len(reads), "studies": _digest(studies)}
            if (
                name == "synth"
            ):  # data.group_by_length: the lengths from rank 0, a disjoint share of each step
                loader, sampler = make_train_loader(task, ctx, group_by_length=True)
                set_loader_epoch(loader, sampler, 0, 0)
                result["grouped"] = {"lengths": task.report_lengths, "batches": [b["ids"] for b in loader]}
        try:  # a root without a train split: every rank raises rank 0's error, none waits for the others
            build_task(
                tiny_config(roots["empty"], *MIMIC), ctx, label_cache=Path(out_dir) / "labels.csv", quiet=True
            )
        except LeadrrgError as exc:
            result["error"] = str(exc)
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        shutdown(ctx)


def test_two_processes_read_the_root_once_and_get_the_same_studies(tmp_path, monkeypatch):
    from leadrrg.train.build import build_task, make_train_loader, set_loader_epoch

    monkeypatch.setenv("LEADRRG_HEADER_CACHE", str(tmp_path / "headers"))  # inherited by the processes
    roots = {
        "synth": str(
            make_synth(tmp_path / "synth", train=24, val=4)
        ),  # labels and attributes from the manifest
        "mimic": str(make_mimic_root(tmp_path / "mimic", entries=40)),
    }
    empty = make_mimic_root(tmp_path / "empty", entries=40)  # the same root with its train split emptied
    annotation = json.loads((empty / "annotation.json").read_text())
    (empty / "annotation.json").write_text(json.dumps({**annotation, "train": []}))
    mp.spawn(_worker, args=(_free_port(), {**roots, "empty": str(empty)}, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for name, root in roots.items():
        reads = [ranks[0][name]["reads"], ranks[1][name]["reads"]]
        assert reads == [1, 0], name  # rank 0 alone reads the root
        assert ranks[0][name]["studies"] == ranks[1][name]["studies"], name
        overrides = OVERRIDES[name]
        single = build_task(
            tiny_config(root, *overrides), DistContext(), label_cache=tmp_path / "one.csv", quiet=True
        )
        alone = [*single.train_dataset.studies, *(single.val_dataset.studies if single.val_dataset else [])]
        as_one = json.loads(json.dumps(_digest(alone)))
        assert ranks[0][name]["studies"] == as_one, name  # what one process reads
    grouped = [rank["grouped"] for rank in ranks]
    assert grouped[0]["lengths"] == grouped[1]["lengths"] and len(set(grouped[0]["lengths"])) > 1
    assert len(grouped[0]["batches"]) == len(grouped[1]["batches"]) == 3
    one = build_task(
        tiny_config(roots["synth"], *OVERRIDES["synth"], "train.batch_size=8"), DistContext(), quiet=True
    )
    loader, sampler = make_train_loader(one, DistContext(), group_by_length=True)
    set_loader_epoch(loader, sampler, 0, 0)
    for step, batch in enumerate(loader):  # the two ranks' batches of a step: one process's batch of 2 x 4
        shares = [grouped[0]["batches"][step], grouped[1]["batches"][step]]
        assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == sorted(batch["ids"])
    assert ranks[0]["error"] == ranks[1]["error"]  # rank 0's error, on both
    assert "split 'train' is not in mimic_cxr data" in ranks[0]["error"]


def test_one_process_reads_as_before(tmp_path):
    root = make_synth(tmp_path / "synth", train=6, val=2)
    calls = []

    def read(config, label_cache, startup):
        calls.append(config.data.root)
        from leadrrg.train.startup import read_labelled_studies

        return read_labelled_studies(config, label_cache, startup)

    train, val = read_task_studies(tiny_config(root), DistContext(), tmp_path / "l.csv", Startup(False), read)
    assert calls == [str(root)] and len(train) == 6 and len(val) == 2


def test_studies_travel_whole():
    from leadrrg.data.manifests import Study

    labels = np.array([1, 0, -1, np.nan] + [np.nan] * 10, dtype=np.float32)
    studies = [
        Study("a", "train", ["/r/a.png", "/r/b.png"], "Heart normal.", labels, {"Edema": {"side": "left"}}),
        Study("b", "train", ["/r/c.png"], "", None, None),
        Study("c", "val", [], "Effusion.", labels * 0, None),
    ]
    back = _unpack_studies(_pack_studies(studies))
    assert _digest(back) == _digest(studies)
    assert back[0].labels.dtype == np.float32 and back[1].labels is None
    assert _unpack_studies(_pack_studies([])) == []
