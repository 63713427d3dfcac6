"""`leadrrg generate --inputs` on Kaggle's indiana_projections.csv, whose `filename`s lie under
images/images_normalized/ and not beside the CSV (issue 24): no report is written, and that is an error (exit 2),
not "wrote 0 reports" with exit 0."""

from __future__ import annotations

import csv

from leadrrg.cli import main
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run


def test_a_batch_that_wrote_nothing_exits_2(tmp_path, capsys):
    run_dir = write_tiny_run(
        tmp_path / "run", make_jsonl(tmp_path / "data", counts={"train": 2, "test": 1}, views=1)
    )
    root = tmp_path / "kaggle"
    (root / "images" / "images_normalized").mkdir(parents=True)
    with open(root / "indiana_projections.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "filename", "projection"])
        for uid in (1, 2):
            name = f"{uid}_IM-000{uid}-1001.dcm.png"
            writer.writerow([uid, name, "Frontal"])
            write_png(root / "images" / "images_normalized" / name, seed=uid)
    out = tmp_path / "preds.jsonl"
    argv = [
        "generate",
        "--run",
        str(run_dir),
        "--inputs",
        str(root / "indiana_projections.csv"),
        "--study-column",
        "uid",
        "--path-column",
        "filename",
        "--out",
        str(out),
        "--set",
        "decode.max_new_tokens=4",
    ]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "wrote 0 reports" in captured.out and "no report was written for the 2 studies" in captured.err
