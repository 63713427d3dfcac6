"""`leadrrg generate --inputs`: studies from a folder, a glob or a CSV, without reports; resume; bad images listed,
never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.errors import LeadrrgError
from leadrrg.inference.studies import find_studies
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run

SHORT = ["--set", "decode.max_new_tokens=4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data)


@pytest.fixture()
def folder(tmp_path) -> Path:
    """scans/p1/s1 (two views), scans/p1/s2 (one view, one broken file), scans/p2/s3 (only a broken file), and
    scans/loose.png (a study of its own)."""
    root = tmp_path / "scans"
    for sub in ("p1/s1", "p1/s2", "p2/s3"):
        (root / sub).mkdir(parents=True)
    write_png(root / "p1/s1/1_frontal.png", seed=1)
    write_png(root / "p1/s1/2_lateral.png", seed=2)
    write_png(root / "p1/s2/frontal.png", seed=3)
    (root / "p1/s2/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "p2/s3/empty.dcm").write_bytes(b"")
    (root / "p1/s1/notes.txt").write_text("not an image")
    write_png(root / "loose.png", seed=4)
    return root


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_grouping_glob_and_csv(folder, tmp_path):
    studies = find_studies(str(folder))
    assert [s.id for s in studies] == ["loose", "p1/s1", "p1/s2", "p2/s3"]
    assert [Path(p).name for p in studies[1].images] == ["1_frontal.png", "2_lateral.png"]
    globbed = find_studies(str(folder / "p1" / "*" / "*.png"))
    assert [s.id for s in globbed] == ["s1", "s2"] and len(globbed[1].images) == 2
    csv = tmp_path / "studies.csv"
    csv.write_text(
        "study_id,path\na,scans/p1/s1/1_frontal.png\nb,scans/loose.png\na,scans/p1/s1/2_lateral.png\n"
    )
    from_csv = find_studies(str(csv))
    assert [(s.id, len(s.images)) for s in from_csv] == [("a", 2), ("b", 1)]
    assert Path(from_csv[0].images[0]).is_file()
    with pytest.raises(LeadrrgError, match="no study column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("x,y\n1,2\n")
        find_studies(str(bad))
    with pytest.raises(LeadrrgError, match="does not exist"):
        find_studies(str(tmp_path / "nowhere"))
    with pytest.raises(LeadrrgError, match="no PNG, JPEG or DICOM"):
        (tmp_path / "void").mkdir()
        find_studies(str(tmp_path / "void"))


def test_a_folder_without_reports_bad_images_listed_never_fatal(run_dir, folder, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert main(["generate", "--run", str(run_dir), "--inputs", str(folder), "--out", str(out), *SHORT]) == 0
    records = {r["id"]: r for r in lines(out)}
    assert list(records) == ["loose", "p1/s1", "p1/s2", "p2/s3"]
    for key in ("loose", "p1/s1", "p1/s2"):
        assert isinstance(records[key]["report"], str) and len(records[key]["findings"]) == 14
        assert set(records[key]["expert_probs"]) and "error" not in records[key]
    assert len(records["p1/s1"]["images"]) == 2
    (bad,) = records["p1/s2"]["bad_images"]  # the study kept its good view
    assert bad["path"].endswith("broken.png") and "broken.png" in bad["reason"]
    assert "report" not in records["p2/s3"] and "empty" in records["p2/s3"]["error"]
    summary = capsys.readouterr().out
    assert "wrote 3 reports" in summary and "1 studies without a readable image, 2 bad images" in summary


def test_an_interrupted_run_resumes_and_skips_finished_studies(run_dir, folder, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    args = [
        "generate",
        "--run",
        str(run_dir),
        "--inputs",
        str(folder),
        "--out",
        str(out),
        "--batch-size",
        "1",
        *SHORT,
    ]
    assert main([*args, "--limit", "2"]) == 0
    first = out.read_text()
    with open(out, "a") as handle:
        handle.write('{"id": "p1/s2", "rep')  # killed mid-line
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming: 2 of 4 studies" in capsys.readouterr().err
    records = lines(out)
    assert [r["id"] for r in records] == ["loose", "p1/s1", "p1/s2", "p2/s3"]
    assert out.read_text().startswith(first)  # the finished lines were kept as they were
    assert main([*args, "--restart"]) == 0
    assert len(lines(out)) == 4


def test_evidence_in_inputs_mode(run_dir, folder, tmp_path):
    out = tmp_path / "preds.jsonl"
    args = [
        "generate",
        "--run",
        str(run_dir),
        "--inputs",
        str(folder / "p1"),
        "--out",
        str(out),
        "--evidence",
    ]
    assert main([*args, *SHORT]) == 0
    for record in lines(out):
        assert record["evidence"]["layers"] == 2 and "full" not in record["evidence"]
