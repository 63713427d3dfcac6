"""The papercuts of issue 22 (../shared/research/audit/ux_audit.md #7, #8, #9, #17, #26, #29, #30, #16): stage 1
announced and counted in the summary, `compare` column names and a short table, `label` keeping the id column,
split-mode `generate` resuming, `explain --png` refused before writing, `--log-level info`, the model card's
hub header and Limitations, and `train.tracker`."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import pytest

from leadrrg.cli import main
from leadrrg.commands import export as export_command
from leadrrg.commands.train import duration, format_summary
from leadrrg.errors import LeadrrgError
from leadrrg.evaluation.compare import system_names
from leadrrg.inference import shards
from leadrrg.train.loop import train
from leadrrg.train.run_log import tracker_package
from tests.fixtures_data import make_jsonl, write_png
from tests.test_compare import GOOD, POOR, records
from tests.test_evaluate import keyword_labeler, write_jsonl
from tests.test_generate_cli import write_tiny_run
from tests.test_train_helpers import make_synth, tiny_config

SHORT = ["--set", "decode.max_new_tokens=4"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 3}, views=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_root) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"), data_root)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth") / "data", train=16, val=4)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------
# train: stage 1 announced, the whole wall time in the summary; train.tracker


def test_stage_one_is_announced_and_counted_in_the_summary(synth_root, tmp_path, capsys):
    config = tiny_config(
        synth_root, "train.max_steps=2", "model.grounding.expert_warmup_steps=3", "train.tracker=none"
    )
    summary = train(config, tmp_path / "run")
    err = capsys.readouterr().err
    assert "stage 1: 3 expert warm-up steps" in err and "then 2 joint steps" in err, err
    assert "model.grounding.expert_warmup_steps=0" in err  # how to turn it off
    assert summary["stage1_steps"] == 3 and summary["steps"] == 2
    assert summary["stage1_time_s"] > 0 and summary["joint_time_s"] > 0
    assert summary["wall_time_s"] == pytest.approx(summary["stage1_time_s"] + summary["joint_time_s"])
    assert summary["wall_time_s"] >= summary["train_time_s"]
    line = format_summary(summary)
    assert line.startswith("trained 3 stage-1 + 2 joint steps") and "(stage 1 " in line and "joint " in line
    assert not (tmp_path / "run" / "tb").exists()  # train.tracker=none: logs.jsonl only
    assert lines(tmp_path / "run" / "logs.jsonl")


def test_the_summary_reports_the_whole_wall_time():
    summary = {
        "steps": 60,
        "epochs": 4.8,
        "train_time_s": 27.0,
        "stage1_steps": 300,
        "stage1_time_s": 70.0,
        "joint_time_s": 32.0,
        "wall_time_s": 102.0,
        "final_val_loss": 1.5,
        "val_expert_macro_auroc": None,
        "studies_per_s": 10.0,
        "peak_memory_mb": 100.0,
        "run_dir": "runs/x",
    }
    line = format_summary(summary)
    assert "trained 300 stage-1 + 60 joint steps (4.80 epochs) in 1 min 42 s" in line
    assert "(stage 1 1 min 10 s, joint 32 s)" in line
    no_stage = format_summary({**summary, "stage1_steps": 0, "stage1_time_s": 0.0, "wall_time_s": 32.0})
    assert no_stage.startswith("trained 60 steps (4.80 epochs) in 32 s:")
    assert (duration(5), duration(3725)) == ("5 s", "1 h 02 min")


def test_tensorboard_is_the_default_tracker(synth_root, tmp_path, capsys):
    config = tiny_config(synth_root, "train.max_steps=1")
    assert config.train.tracker == "tensorboard"
    summary = train(config, tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "tb").is_dir() and any((tmp_path / "run" / "tb").iterdir())
    assert summary["stage1_steps"] == 0 and "stage 1" not in capsys.readouterr().err


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_tracker_package_names_the_extra(tracker, synth_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed
    with pytest.raises(LeadrrgError, match=rf"pip install 'leadrrg\[{tracker}\]'"):
        tracker_package(tracker)
    out = tmp_path / "run"
    with pytest.raises(LeadrrgError, match=f"train.tracker={tracker} needs the {tracker} package"):
        train(tiny_config(synth_root, f"train.tracker={tracker}"), out)
    assert not out.exists()  # said before any work
    assert tracker_package("tensorboard") is None and tracker_package("none") is None


def test_an_unknown_tracker_is_refused(synth_root, tmp_path, capsys):
    args = ["train", "--preset", "demo", "--data", str(synth_root), "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "train.tracker=comet"]) == 2
    assert (
        "train.tracker is 'comet'; expected one of: tensorboard, wandb, mlflow, none"
        in capsys.readouterr().err
    )


# ------------------------------------------------------------------------------------------------
# compare: distinguishing column names, a short default table


def test_compare_names_columns_by_the_run_folder():
    assert system_names("runs/demo/lvlm/preds_test.jsonl", "runs/demo/lead/preds_test.jsonl") == (
        "lvlm",
        "lead",
    )
    assert system_names("a.jsonl", "b.jsonl") == ("a.jsonl", "b.jsonl")
    assert system_names("x/p.jsonl", "x/p.jsonl") == ("A", "B")


@pytest.fixture()
def two_runs(tmp_path, monkeypatch):
    import leadrrg.labeler

    monkeypatch.setattr(leadrrg.labeler, "label_reports", keyword_labeler)
    for name in ("lvlm", "lead"):
        (tmp_path / name).mkdir()
    a = write_jsonl(tmp_path / "lvlm" / "preds_test.jsonl", [json.dumps(r) for r in records(POOR)])
    b = write_jsonl(tmp_path / "lead" / "preds_test.jsonl", [json.dumps(r) for r in records(GOOD)])
    return a, b


def test_compare_prints_a_short_table_and_all_with_all(two_runs, capsys):
    a, b = two_runs
    assert main(["compare", str(a), str(b), "--bootstrap", "20"]) == 0
    short = capsys.readouterr().out
    assert short.startswith("lead - lvlm: 20 paired bootstrap replicates")
    header = short.splitlines()[1]
    assert "lvlm" in header and "lead" in header and "preds_test" not in header
    assert "ce14_micro_f1" in short and "bleu_4" in short and "ce14_example_recall" not in short
    assert "--all shows every one" in short
    assert main(["compare", str(a), str(b), "--bootstrap", "20", "--all", "--names", "LVLM,LEAD"]) == 0
    everything = capsys.readouterr().out
    assert "ce14_example_recall" in everything and "--all shows" not in everything
    assert "LEAD - LVLM" in everything and len(everything.splitlines()) > len(short.splitlines()) + 10


def test_compare_refuses_bad_names(two_runs, capsys):
    a, b = two_runs
    assert main(["compare", str(a), str(b), "--names", "only"]) == 2
    assert "--names 'only': expected two different names" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# label: the id column is kept


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_label_keeps_a_csv_id_column(tmp_path, capsys):
    source = tmp_path / "indiana_reports.csv"
    source.write_text(
        "uid,MeSH,findings,impression\n"
        "CXR1,normal,The heart is normal.,No acute disease.\n"
        "CXR2,Effusion,Small left effusion.,Effusion.\n"
    )
    out = tmp_path / "labels.csv"
    assert main(["label", str(source), "--text-columns", "findings,impression", "--out", str(out)]) == 0
    rows = read_csv(out)
    assert rows[0][:2] == ["uid", "Reports"] and [r[0] for r in rows[1:]] == ["CXR1", "CXR2"]
    assert "ids in column 'uid'" in capsys.readouterr().out


def test_label_keeps_study_id_first_column_and_jsonl_id(tmp_path):
    study = tmp_path / "a.csv"
    study.write_text("report,study_id\nclear lungs,s1\nedema,s2\n")
    first = tmp_path / "b.csv"
    first.write_text("accession,report\nA-1,clear lungs\nA-2,edema\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": 7, "report": "edema"}\n{"id": 8, "report": "clear"}\n')
    for source, name, ids in ((study, "study_id", ["s1", "s2"]), (first, "accession", ["A-1", "A-2"])):
        out = tmp_path / f"{source.stem}_labels.csv"
        assert main(["label", str(source), "--out", str(out)]) == 0
        rows = read_csv(out)
        assert rows[0][:2] == [name, "Reports"] and [r[0] for r in rows[1:]] == ids
    out = tmp_path / "c_labels.csv"
    assert main(["label", str(jsonl), "--out", str(out)]) == 0
    assert [r[0] for r in read_csv(out)] == ["id", "7", "8"]


def test_label_without_ids_and_a_wrong_id_column(tmp_path, capsys):
    text = tmp_path / "reports.txt"
    text.write_text("clear lungs\nedema\n")
    out = tmp_path / "labels.csv"
    assert main(["label", str(text), "--out", str(out)]) == 0
    assert read_csv(out)[0][0] == "Reports"
    prose = tmp_path / "prose.csv"
    prose.write_text("note,report\nsame,clear lungs\nsame,edema\n")  # not unique: not an id
    assert main(["label", str(prose), "--out", str(out)]) == 0
    assert read_csv(out)[0][0] == "Reports"
    assert main(["label", str(prose), "--id-column", "uid", "--out", str(out)]) == 2
    assert "--id-column uid not found; columns present: note, report" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# generate --split: resumes like --inputs


def generate_split(run_dir: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--run", str(run_dir), "--split", "test", "--out", str(out), *SHORT, *extra])


def test_split_generation_resumes_and_restarts(run_dir, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert generate_split(run_dir, out, "--limit", "1") == 0
    first = lines(out)
    assert [r["id"] for r in first] == ["s0002"] and "made_by" in first[0]
    marked = {**first[0], "generated": "kept from the first run"}
    out.write_text(json.dumps(marked) + "\n")
    capsys.readouterr()
    assert generate_split(run_dir, out) == 0
    captured = capsys.readouterr()
    assert "resuming: 1 of 3 studies already done" in captured.err
    assert "wrote 3 reports" in captured.out
    records = lines(out)
    assert [r["id"] for r in records] == ["s0002", "s0003", "s0004"]  # split order
    assert records[0]["generated"] == "kept from the first run"  # not decoded again
    assert not shards.part_paths(out) and not shards.lock_path(out).exists()
    assert generate_split(run_dir, out, "--restart") == 0
    assert lines(out)[0]["generated"] != "kept from the first run"


def test_split_generation_finishes_a_killed_run_from_its_part_file(run_dir, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert generate_split(run_dir, out, "--limit", "1") == 0
    part = shards.part_path(out, 0, 1)
    out.rename(part)  # what a kill after the first batch leaves
    assert generate_split(run_dir, out) == 0
    assert "resuming: 1 of 3" in capsys.readouterr().err
    assert [r["id"] for r in lines(out)] == ["s0002", "s0003", "s0004"] and not part.exists()


def test_split_resume_by_other_decode_settings_is_refused(run_dir, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    assert generate_split(run_dir, out, "--limit", "1") == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert generate_split(run_dir, out, "--set", "decode.strategy=beam") == 2
    err = capsys.readouterr().err
    assert "decode.strategy" in err and "--restart" in err
    assert out.read_bytes() == before


# ------------------------------------------------------------------------------------------------
# explain --png: refused before anything is written


def test_explain_png_without_gates_writes_nothing(run_dir, tmp_path, capsys):
    plain = tmp_path / "lvlm"
    plain.mkdir()
    for entry in run_dir.iterdir():
        (plain / entry.name).symlink_to(entry)
    (plain / "config.json").unlink()
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["injection"]["fusion"] = "none"
    (plain / "config.json").write_text(json.dumps(config))
    image = write_png(tmp_path / "frontal.png", seed=1)
    html, png = tmp_path / "study.html", tmp_path / "gates.png"
    args = ["explain", "--run", str(plain), "--images", str(image), "--out", str(html), "--png", str(png)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "fusion='none'" in err and "layer-wise" in err and "Nothing was written" in err
    assert not html.exists() and not png.exists()


# ------------------------------------------------------------------------------------------------
# --log-level info


def test_log_level_info_shows_progress(run_dir, tmp_path, caplog):
    out = tmp_path / "preds.jsonl"
    with caplog.at_level(logging.INFO):
        assert (
            main(["--log-level", "info", *["generate", "--run", str(run_dir), "--out", str(out), *SHORT]])
            == 0
        )
    text = caplog.text
    assert "model loaded:" in text and "greedy decoding" in text and "data loaded: 3 studies" in text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["generate", "--run", str(run_dir), "--out", str(out), "--restart", *SHORT]) == 0
    assert "model loaded:" not in caplog.text  # the default level: warnings only


def test_log_level_info_during_training(synth_root, tmp_path, caplog):
    logging.getLogger("leadrrg").setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            train(tiny_config(synth_root, "train.max_steps=1", "train.tracker=none"), tmp_path / "run")
    finally:
        logging.getLogger("leadrrg").setLevel(logging.WARNING)
    assert "data loaded: 16 train and 4 val studies" in caplog.text
    assert "checkpoint written: step 1" in caplog.text


# ------------------------------------------------------------------------------------------------
# the model card


def test_model_card_has_hub_metadata_limitations_and_definitions_once(run_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["data"]["format"] = "synth"
    (run / "config.json").write_text(json.dumps(config))
    metric = {f"bleu_{n}": 0.1 * n for n in range(1, 5)}
    metric.update({"ce14_micro_f1": 0.5, "ce14_macro_f1": 0.4, "gt_ce14_micro_f1": 0.6, "meteor": None})
    metric["reports_with_hallucination"] = 91.0
    metrics = {"test": metric, "shift_test": {**metric, "bleu_4": 0.2}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = export_command.model_card(run)
    header, body = card.split("\n---\n", 1)
    assert header.startswith("---\nlicense: apache-2.0\n") and "library_name: leadrrg" in header
    for line in (
        "tags:",
        "  - radiology-report-generation",
        "datasets:",
        "  - synthcxr",
        "metrics:",
        "  - bleu",
    ):
        assert line in header.splitlines(), line
    assert "## Limitations" in body and "SynthCXR" in body and "not grounded" in body
    assert body.count("BLEU-n") == 1 and body.count("clinical efficacy over the 14") == 1
    assert "| metric | test | shift_test | definition |" in body
    assert "| `bleu_4` | 0.4000 | 0.2000 |" in body and "| `reports_with_hallucination` | 91 | 91 |" in body
    assert "| `meteor` | missing | missing |" in body
    (run / "README.md").write_text(card)  # an export from before the marker still reads as one
    (run / "metrics.json").unlink()
    assert export_command.is_export(run)
    mimic = {**config, "data": {**config["data"], "format": "mimic_cxr"}}
    (run / "config.json").write_text(json.dumps(mimic))
    other = export_command.model_card(run)
    assert "license: other\n" in other and "  - mimic-cxr" in other and "SynthCXR" not in other
    assert "The run was not evaluated" in other
