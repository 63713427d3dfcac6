"""The robustness suite: every CLI command against every relevant bad input (tests/bad_inputs.py), each case a
fresh `leadrrg.cli.main` call in one subprocess (tests/cli_batch.py: torch and transformers are imported once, not
once per case, which costs 5-15 s each time on two shared cores). Each must exit with its code (2: bad input) and
one sentence naming the input, print no traceback, and leave no output behind as if complete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leadrrg.cli import main
from tests.bad_inputs import (
    CASE_NAMES,
    Workspace,
    build_cases,
    corrupt_png,
    train_argv,
    truncated_jpeg,
    undecodable_png,
)
from tests.fixtures_data import make_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def good(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(tmp, data root, run): one good tiny jsonl data root and one good run trained on it for 2 steps."""
    tmp = tmp_path_factory.mktemp("robustness")
    data = make_jsonl(tmp / "good" / "data", counts={"train": 6, "val": 2, "test": 2})
    run = tmp / "good" / "run"
    assert main(train_argv(data, run)) == 0
    return tmp, data, run


@pytest.fixture(scope="session")
def corpus(good) -> tuple[dict, dict]:
    """(cases, results): the bad inputs built next to the good data root and run, and what each command line did."""
    tmp, data, run = good
    cases = build_cases(Workspace(tmp / "bad", data, run))
    assert tuple(cases) == CASE_NAMES
    cases_path, results_path = tmp / "cases.json", tmp / "results.json"
    cases_path.write_text(json.dumps({name: case.argv for name, case in cases.items()}))
    command = [sys.executable, "-m", "tests.cli_batch", str(cases_path), str(results_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=tmp, env=env, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr  # nothing printed past the captured streams
    results = json.loads(results_path.read_text())
    return cases, results


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_one_clear_sentence(corpus, name):
    cases, results = corpus
    case, result = cases[name], results[name]
    shown = f"{' '.join(case.argv)}\nrc={result['rc']}\nstderr:\n{result['stderr']}"
    assert result["rc"] == case.rc, shown
    assert "Traceback" not in result["stderr"] + result["stdout"], shown
    assert "internal error" not in result["stderr"], shown
    for words in case.named:
        assert words in result["stderr"] + result["stdout"], f"{words!r} not named:\n{shown}"
    if case.rc == 2:
        errors = [line for line in result["stderr"].splitlines() if ": error: " in line]
        assert len(errors) == 1, shown
    for path in case.absent:
        assert not path.exists(), f"{path} left behind:\n{shown}"
    for path in case.present:
        assert path.exists(), f"{path} was removed:\n{shown}"


# --------------------------------------------------------------------------------------------------
# What must hold besides a clean refusal: nothing trained is lost, damaged inputs are skipped when asked.


def _copy(good, name: str) -> tuple[Path, Workspace]:
    tmp, data, run = good
    workspace = Workspace(tmp / name, data, run)
    return workspace.data(name), workspace


def test_a_bad_validation_image_never_costs_the_run(good, capsys):
    """The image passes the header check and fails to decode at the evaluation step (eval_every == save_every):
    the checkpoint is written first, the evaluation is skipped with a warning, and the run completes."""
    root, workspace = _copy(good, "bad_val_decode")
    bad = undecodable_png(workspace.image_of(root, "val"))
    out = root.parent / "run"
    assert main(train_argv(root, out)) == 0
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    errors = [
        json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines() if "val_error" in line
    ]
    assert errors and str(bad) in errors[0]["error"]


def test_skip_bad_images_skips_truncated_corrupt_and_undecodable(good):
    root, workspace = _copy(good, "skip_bad")
    entries = workspace.manifest(root)
    truncated_jpeg(root / "images" / "truncated.jpg")
    entries[0]["images"] = ["images/truncated.jpg"]
    workspace.write_manifest(root, entries)
    corrupt_png(root / entries[1]["images"][0])
    undecodable_png(root / entries[2]["images"][0])  # passes the header check: masked when loaded
    undecodable_png(workspace.image_of(root, "val"))
    out = root.parent / "run"
    assert main(train_argv(root, out, "data.skip_bad_images=true", "train.batch_size=2")) == 0
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2


def test_resume_drops_a_torn_log_line(good, tmp_path):
    run = Path(shutil.copytree(good[2], tmp_path / "run"))
    with open(run / "logs.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 3, "lo')  # killed mid-write
    assert main(["train", "--out", str(run), "--resume", "--quiet", "--set", "train.max_steps=3"]) == 0
    records = [json.loads(line) for line in (run / "logs.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3


def test_evaluate_scores_empty_reports(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        '{"id": "a", "reference": "", "generated": ""}\n{"id": "b", "reference": "", "generated": "x"}\n'
    )
    assert main(["evaluate", "--preds", str(preds), "--out", str(tmp_path / "m.json"), "--no-meteor"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["cider"] is None and "empty" in metrics["missing"]["cider"]


def test_the_last_net_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("leadrrg.commands.label.run", broken)
    assert main(["label", "x.csv", "--out", "y.csv"]) == 1
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "internal error: ZeroDivisionError: a bug" in err
        and "--log-level debug" in err
    )
    assert "Traceback" not in err
    assert main(["label", "x.csv", "--out", "y.csv", "--log-level", "debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["--log-level", "debug", "label", "x.csv", "--out", "y.csv"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_killed_synth_leaves_no_partial_folder_for_good(tmp_path):
    from leadrrg.data.synth.generate import synthesize

    stale = tmp_path / ".data.4999999-abcd.partial"  # a pid above the kernel's limit: its process is gone
    stale.mkdir()
    (stale / "manifest.jsonl").write_text("")
    synthesize(tmp_path / "data", {"train": 1}, size=32)
    assert not stale.exists() and (tmp_path / "data" / "manifest.jsonl").is_file()


def test_a_data_error_mid_training_saves_the_steps_done_first(good):
    from leadrrg.errors import LeadrrgError
    from leadrrg.train.loop import train
    from tests.test_train_helpers import tiny_config

    root, workspace = _copy(good, "bad_train_decode")
    out = root.parent / "run"
    config = tiny_config(
        root, "data.format=jsonl", "train.save_every=0", "train.eval_every=0", "data.num_workers=1"
    )

    # After step 2 (no checkpoint yet) no training image decodes; the error comes from a loader worker.
    def break_every_image(step, record):
        if step == 2:
            for entry in workspace.manifest(root):
                undecodable_png(root / entry["images"][0])

    with pytest.raises(
        LeadrrgError, match="could not be decoded .*the 2 steps trained so far are saved"
    ) as info:
        train(config, out, callbacks=[break_every_image], quiet=True)
    assert "Traceback" not in str(info.value) and "DataLoader worker" not in str(info.value)
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    shutil.rmtree(root / "images")
    shutil.copytree(good[1] / "images", root / "images")
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 4


def test_a_closed_stdout_pipe_ends_quietly(tmp_path):
    # `leadrrg generate ... | head`: the reader leaves, the command's next print raises BrokenPipeError.
    code = (
        "import sys, leadrrg.commands.synth as command\n"
        "from leadrrg.cli import main\n"
        "def run(args):\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "command.run = run\n"
        "sys.exit(main(['synth', '--out', sys.argv[1]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1 and not done.stdout, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
