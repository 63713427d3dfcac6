"""The data losses of the reliability audit (shared/research/audit/reliability.md, "Data loss"): commands that
exited 0 after deleting or overwriting what the user had. Each case is the audit's reproduction; the command must
now refuse (exit 2, an `error:` line naming the path) and leave every file as it was, or keep every line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.commands.export import MARKER
from leadrrg.errors import LeadrrgError
from leadrrg.inference import shards
from leadrrg.io import check_apart, check_not_input
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run

SHORT = ["--set", "decode.max_new_tokens=4"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 2}, views=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run") / "run", data_root)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` and its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def copy_run(run_dir: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(run_dir, target)
    return target


# --------------------------------------------------------------------------------------------------
# export


def test_export_to_a_parent_of_the_run_deletes_nothing(run_dir, tmp_path, capsys):
    """Audit 3: `export runs/lead --out runs` deleted the run, its siblings and notes.txt (rc 0)."""
    runs = tmp_path / "runs"
    lead = copy_run(run_dir, runs / "lead")
    copy_run(run_dir, runs / "other")
    (runs / "notes.txt").write_text("x\n")
    before = snapshot(runs)
    assert main(["export", str(lead), "--out", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"--out {runs} contains the run directory {lead}" in err
    assert snapshot(runs) == before
    assert main(["export", str(lead), "--out", str(tmp_path)]) == 2  # a grandparent too
    assert snapshot(runs) == before


def test_export_inside_the_run_or_the_run_itself_is_refused(run_dir, tmp_path, capsys):
    lead = copy_run(run_dir, tmp_path / "lead")
    before = snapshot(lead)
    assert main(["export", str(lead), "--out", str(lead / "export")]) == 2
    assert f"is inside the run directory {lead}" in capsys.readouterr().err
    link = tmp_path / "link"
    link.symlink_to(lead)
    assert main(["export", str(lead), "--out", str(link)]) == 2  # the run under another name
    assert "is the run directory itself" in capsys.readouterr().err
    assert snapshot(lead) == before and not (lead / "export").exists()


def test_export_to_a_folder_that_is_not_an_export_deletes_nothing(run_dir, tmp_path, capsys):
    """Audit 2: `mkdir mydocs; echo work > mydocs/thesis.tex; export RUN --out mydocs` deleted thesis.tex."""
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("work\n")
    assert main(["export", str(run_dir), "--out", str(docs)]) == 2
    err = capsys.readouterr().err
    assert f"--out {docs} is a folder that is not empty" in err and f"no {MARKER}" in err
    assert snapshot(docs) == {"thesis.tex": b"work\n"}


def test_an_earlier_export_is_replaced_and_an_empty_folder_filled(run_dir, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert json.loads((out / MARKER).read_text())["leadrrg_export"] == 1
    assert main(["export", str(run_dir), "--out", str(out)]) == 0  # an earlier export, by its marker
    (out / MARKER).unlink()  # an export made before the marker: only export files and its model card
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert (out / MARKER).is_file()
    (out / "my_notes.txt").write_text("mine\n")  # the user's file in an export is not replaced with it
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "also holds 'my_notes.txt'" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "mine\n"


# --------------------------------------------------------------------------------------------------
# generate --out one of its inputs


def test_generate_out_the_data_manifest_is_refused(run_dir, data_root, tmp_path, capsys):
    """Audit 6: `generate --data DATA --out DATA/manifest.jsonl` replaced the data set's manifest (rc 0)."""
    manifest = data_root / "manifest.jsonl"
    before = manifest.read_bytes()
    args = ["generate", "--run", str(run_dir), "--data", str(data_root), "--format", "jsonl", *SHORT]
    assert main([*args, "--split", "test", "--out", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert f"--out {manifest} is an input of this command" in err
    link = tmp_path / "preds.jsonl"
    link.symlink_to(manifest)  # the manifest under another name
    assert main([*args, "--out", str(link)]) == 2
    assert f"the same file as {manifest}" in capsys.readouterr().err
    assert main([*args, "--out", str(run_dir / "config.json")]) == 2  # the run's own files
    assert manifest.read_bytes() == before
    assert main([*args, "--out", str(tmp_path / "new.jsonl")]) == 0  # any other path is fine


def test_generate_out_the_inputs_csv_is_refused(run_dir, tmp_path, capsys):
    write_png(tmp_path / "a.png", seed=1)
    csv = tmp_path / "studies.csv"
    csv.write_text("study_id,path,note\ns1,a.png,keep me\n")
    before = csv.read_bytes()
    assert main(["generate", "--run", str(run_dir), "--inputs", str(csv), "--out", str(csv), *SHORT]) == 2
    assert f"--out {csv} is an input of this command" in capsys.readouterr().err
    assert csv.read_bytes() == before


def test_check_not_input(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("x\n")
    check_not_input(tmp_path / "new.jsonl", [source])  # not there yet: cannot be an input
    check_not_input(tmp_path / "in.jsonl", [tmp_path / "missing"])  # missing inputs are ignored
    other = tmp_path / "other"
    other.write_text("x\n")
    check_not_input(other, [source])  # the same bytes, another file
    (tmp_path / "sub").mkdir()
    with pytest.raises(LeadrrgError, match=r"--preds .*in\.jsonl is an input of this command"):
        check_not_input(tmp_path / "sub" / ".." / "in.jsonl", [source], "--preds")
    os.link(source, tmp_path / "hard")
    with pytest.raises(LeadrrgError, match="the same file as"):
        check_not_input(tmp_path / "hard", [str(source)])


def test_check_apart(tmp_path):
    run = tmp_path / "runs" / "lead"
    run.mkdir(parents=True)
    check_apart(tmp_path / "runs" / "export", run, "--out", "the run directory")  # a sibling
    for out, problem in ((run, "itself"), (tmp_path, "contains"), (run / "x" / "y", "is inside")):
        with pytest.raises(LeadrrgError, match=problem):
            check_apart(out, run, "--out", "the run directory")


# --------------------------------------------------------------------------------------------------
# resuming --inputs: a blank line is not the end of the file


def _records(ids: list[str]) -> str:
    return "".join(json.dumps({"id": i, "report": f"report {i}"}) + "\n" for i in ids)


def test_a_blank_line_in_an_inputs_file_keeps_every_line_after_it(run_dir, tmp_path, capsys):
    """Audit 1: a.jsonl + blank line + b.jsonl, resumed with inpA's studies: inpB's 10 reports were deleted."""
    inputs = {}
    for name, seeds in (("inpA", (1, 2)), ("inpB", (3, 4))):
        for seed in seeds:
            write_png(tmp_path / name / f"{name}{seed}" / "frontal.png", seed=seed)
        inputs[name] = tmp_path / name
    generate = ["generate", "--run", str(run_dir), *SHORT]
    a, b, both = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "all.jsonl"
    assert main([*generate, "--inputs", str(inputs["inpA"]), "--out", str(a)]) == 0
    assert main([*generate, "--inputs", str(inputs["inpB"]), "--out", str(b)]) == 0
    both.write_text(a.read_text() + "\n" + b.read_text())
    before = both.read_bytes()
    capsys.readouterr()
    assert main([*generate, "--inputs", str(inputs["inpA"]), "--out", str(both)]) == 0
    assert "2 studies were already done" in capsys.readouterr().out
    assert both.read_bytes() == before  # nothing to add, nothing removed
    ids = [json.loads(line)["id"] for line in both.read_text().splitlines() if line]
    assert ids == ["inpA1", "inpA2", "inpB3", "inpB4"]


def test_read_records_skips_blank_lines_and_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(_records(["a"]) + "\n  \n" + _records(["b"]) + '{"id": "c", "rep')
    assert [study_id for study_id, _ in shards.read_records(path)] == ["a", "b"]
    assert path.read_text() == _records(["a"]) + "\n  \n" + _records(["b"])  # the torn line only
    path.write_text(_records(["a", "b"]).rstrip("\n"))  # a whole last record, its newline missing: kept
    assert [study_id for study_id, _ in shards.read_records(path)] == ["a", "b"]
    assert path.read_text() == _records(["a", "b"])


def test_read_records_refuses_a_bad_line_instead_of_cutting_the_file(tmp_path):
    path = tmp_path / "preds.jsonl"
    for bad in ("not json", '{"no_id": 1}', "[1, 2]"):
        text = _records(["a"]) + bad + "\n" + _records(["b"])
        path.write_text(text)
        with pytest.raises(LeadrrgError, match=r"preds\.jsonl, line 2: not a JSON object with an 'id'"):
            shards.read_records(path)
        assert path.read_text() == text
    notes = tmp_path / "notes.txt"  # not predictions, one line without a newline: not a torn record
    notes.write_text("my notes")
    with pytest.raises(LeadrrgError, match="line 1"):
        shards.read_records(notes)
    assert notes.read_text() == "my notes"


def test_a_sharded_merge_keeps_the_other_lines_of_an_inputs_file(tmp_path):
    out = tmp_path / "all.jsonl"
    out.write_text(_records(["a"]) + "\n" + _records(["x", "y"]))  # other studies' reports, a blank line
    shards.part_path(out, 0, 2).write_text(_records(["b"]))
    shards.part_path(out, 1, 2).write_text(_records(["c"]))
    assert shards.merge(out, ["a", "b", "c"], include_out=True) == 5
    assert out.read_text() == _records(["x", "y", "a", "b", "c"])
    assert shards.part_paths(out) == []


def test_evaluate_and_label_refuse_to_overwrite_their_input(tmp_path, capsys):
    from leadrrg import cli

    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"id": "a", "reference": "No effusion.", "generated": "No effusion."}\n')
    before = preds.read_text()
    assert cli.main(["evaluate", "--preds", str(preds), "--out", str(preds), "--no-meteor"]) == 2
    assert preds.read_text() == before
    reports = tmp_path / "reports.txt"
    reports.write_text("Small left effusion.\n")
    assert cli.main(["label", str(reports), "--out", str(reports)]) == 2
    assert reports.read_text() == "Small left effusion.\n"
    assert "is an input of this command" in capsys.readouterr().err
