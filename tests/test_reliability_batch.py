"""`leadrrg generate --inputs` against the audit's defects (../shared/research/audit/reliability.md, "Defects"):
two runs into one --out, extra views dropped silently, a resume by another model or settings, a read-only --out.
Each refusal is exit 2 with one `error:` line naming the file, and the user's file is left byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.errors import LeadrrgError
from leadrrg.inference import batch, shards
from leadrrg.io import exclusive_lock
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run
from tests.test_reliability_train import read_only

SHORT = ["--set", "decode.max_new_tokens=4"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    return write_tiny_run(tmp_path_factory.mktemp("run"), data)


@pytest.fixture()
def scans(tmp_path) -> Path:
    """Three one-view studies, s1..s3."""
    for seed in (1, 2, 3):
        write_png(tmp_path / "scans" / f"s{seed}" / "frontal.png", seed=seed)
    return tmp_path / "scans"


def generate(run_dir: Path, inputs: Path, out: Path, *extra: str) -> int:
    return main(
        ["generate", "--run", str(run_dir), "--inputs", str(inputs), "--out", str(out), *SHORT, *extra]
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def refused(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err.splitlines()[0], err
    for word in words:
        assert word in err, (word, err)
    return err


def test_a_second_run_into_the_same_out_is_refused(run_dir, scans, tmp_path, capsys):
    """Audit: two `generate --inputs` on one --out gave every study twice. Now the second is refused, exit 2,
    naming the holder's PID, and the first's file is untouched; the lock is gone after a run."""
    out = tmp_path / "preds.jsonl"
    assert generate(run_dir, scans, out, "--limit", "1") == 0
    before = out.read_bytes()
    assert not shards.lock_path(out).exists()  # released and removed after the run
    with exclusive_lock(shards.lock_path(out), f"--out {out}"):  # a run still going
        capsys.readouterr()
        assert generate(run_dir, scans, out) == 2
        refused(capsys, str(out), "in use by another leadrrg process", "PID")
    assert out.read_bytes() == before
    assert generate(run_dir, scans, out) == 0  # once it is done, the resume finishes the file
    assert [r["id"] for r in lines(out)] == ["s1", "s2", "s3"]


def test_the_sharded_path_holds_the_lock_through_the_merge(tmp_path):
    out = tmp_path / "preds.jsonl"
    shard = shards.Shard()

    def decode_into(chunk, handle):
        assert shards.lock_path(out).exists()  # held while decoding
        handle.writelines(json.dumps({"id": study.id}) + "\n" for study in chunk)

    class Study:
        def __init__(self, study_id):
            self.id = study_id

    studies = [Study("a"), Study("b")]
    with (
        exclusive_lock(shards.lock_path(out), "--out"),
        pytest.raises(LeadrrgError, match="in use by another leadrrg process"),
    ):
        batch.generate_sharded(studies, out, shard, decode_into, 1, False, True)
    assert not out.exists() and shards.part_paths(out) == []
    assert batch.generate_sharded(studies, out, shard, decode_into, 1, False, True) == 2
    assert not shards.lock_path(out).exists()


def test_extra_views_are_listed_and_counted_never_dropped_silently(run_dir, tmp_path, capsys):
    """Audit: a study with 50 images and a 1-view model gave rc 0, no warning, and `images` listing all 50. Now
    `images` lists the views read (frontal first), `ignored_images` the rest, and one warning line counts them."""
    study = tmp_path / "scans" / "many"
    names = [f"{index}_view.png" for index in range(1, 6)]  # 1_view.png is the frontal
    for seed, name in enumerate(names):
        write_png(study / name, seed=seed)
    write_png(tmp_path / "scans" / "one" / "frontal.png", seed=9)
    out = tmp_path / "preds.jsonl"
    assert generate(run_dir, tmp_path / "scans", out) == 0
    records = {r["id"]: r for r in lines(out)}
    many = records["many"]
    max_views = 2  # tests.test_model_helpers.tiny_config
    assert [Path(p).name for p in many["images"]] == names[:max_views]
    assert [Path(p).name for p in many["ignored_images"]] == names[max_views:]
    assert "ignored_images" not in records["one"] and "report" in many
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 studies" in warnings[0] and "3 images were not read" in warnings[0]


def test_a_resume_by_another_run_or_other_settings_is_refused(run_dir, scans, tmp_path, capsys):
    """Audit: resuming with another --run or --evidence mixed two models' reports in one file, rc 0. Now each
    line records `made_by` and a resume with other weights, decode settings or evidence is refused."""
    out = tmp_path / "preds.jsonl"
    assert generate(run_dir, scans, out, "--limit", "1") == 0
    (record,) = lines(out)
    assert record["made_by"]["weights_sha256"] and record["made_by"]["decode"]["max_new_tokens"] == 4
    before = out.read_bytes()
    cases = [
        (["--set", "decode.max_new_tokens=3"], "decode.max_new_tokens"),
        (["--evidence"], "evidence"),
        (["--set", "decode.strategy=beam"], "decode.strategy"),
    ]
    for extra, differs in cases:
        capsys.readouterr()
        assert generate(run_dir, scans, out, *extra) == 2, extra
        refused(capsys, str(out), "line 1", differs, "new --out", "--restart")
        assert out.read_bytes() == before
    assert (
        generate(run_dir, scans, out, "--batch-size", "2") == 0
    )  # the batch size leaves reports as they are
    assert [r["id"] for r in lines(out)] == ["s1", "s2", "s3"]
    assert generate(run_dir, scans, out, "--restart", "--evidence") == 0  # --restart starts over, allowed
    assert all("evidence" in r for r in lines(out))


def test_another_runs_weights_and_a_line_without_made_by_are_refused(tmp_path):
    out = tmp_path / "preds.jsonl"
    mine = {"weights_sha256": "aaa", "decode": {"strategy": "greedy"}, "evidence": False}
    theirs = {**mine, "weights_sha256": "bbb"}
    text = json.dumps({"id": "a", "made_by": mine}) + "\n" + json.dumps({"id": "b", "made_by": theirs}) + "\n"
    out.write_text(text)
    with pytest.raises(
        LeadrrgError, match=r"preds\.jsonl, line 2 was written by another run .*weights_sha256"
    ):
        shards.read_records(out, mine)
    out.write_text(json.dumps({"id": "a", "report": "x"}) + "\n")
    with pytest.raises(LeadrrgError, match="line 1 has no 'made_by'"):
        shards.finished_ids(out, True, mine)
    assert shards.finished_ids(out, True) == {"a"}  # without made_by (a split's part files): not checked
    assert out.read_text() == json.dumps({"id": "a", "report": "x"}) + "\n"


def test_a_read_only_out_folder_is_refused_before_decoding(run_dir, scans, tmp_path, capsys, monkeypatch):
    """Audit: a read-only --out folder gave exit 1 "internal error: OSError" after the work."""
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    out = folder / "preds.jsonl"
    assert generate(run_dir, scans, out) == 2
    refused(capsys, str(out), "Read-only file system", "--out")
    assert list(folder.iterdir()) == []


def test_the_model_card_leaves_out_metrics_of_another_runs_predictions():
    from leadrrg.commands.export import own_metrics
    from leadrrg.evaluation.evaluate import predictions_weights

    records = [
        {"id": "a", "made_by": {"weights_sha256": "other"}},
        {"id": "b", "made_by": {"weights_sha256": "other"}},
    ]
    assert predictions_weights(records) == ["other"] and predictions_weights([{"id": "a"}]) == []
    metrics = {
        "test": {"bleu_4": 0.3, "meta": {"predictions_weights_sha256": ["mine"]}},
        "shift_test": {"bleu_4": 0.1, "meta": {"predictions_weights_sha256": ["other"]}},
        "val": {"bleu_4": 0.2, "meta": {}},  # predictions that do not say: kept
    }
    kept, foreign = own_metrics(metrics, "mine")
    assert set(kept) == {"test", "val"} and foreign == ["shift_test"]
