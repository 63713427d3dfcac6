"""Per-finding expert thresholds (`leadrrg.inference.calibrate`, `leadrrg calibrate`): the rule, the run's
thresholds.json, what the decoder reads, and the contradictions the API, the CLI and the page show."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch

import leadrrg
from leadrrg.cli import main
from leadrrg.config import DecodeConfig, apply_overrides
from leadrrg.errors import LeadrrgError
from leadrrg.inference import calibrate
from leadrrg.inference.calibrate import (
    GRID,
    best_f1_threshold,
    calibrate_run,
    calibrate_thresholds,
    read_thresholds,
)
from leadrrg.inference.evidence import SOFT_MARK, contradictions, expert_thresholds
from leadrrg.inference.steps import decoding_context
from leadrrg.runs.files import THRESHOLDS_FILE
from tests.fixtures_data import make_jsonl, write_png
from tests.test_generate_cli import write_tiny_run
from tests.test_model_helpers import EXPERTS, build, perturb_zero_init, tiny_batch
from tests.test_model_helpers import tiny_config as tiny_model_config

NAN = float("nan")


# --------------------------------------------------------------------------------------------------
# The rule

CALIBRATED = ["decode.thresholds=calibrated"]  # the decoder reads the run's thresholds.json


def test_best_f1_threshold_separates_and_breaks_ties_toward_the_anchor():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.62, 0.64, 0.9])
    positive = torch.tensor([False, False, False, True, True, True])
    threshold, f1 = best_f1_threshold(probs, positive, anchor=0.7)
    assert f1 == 1.0 and threshold == 0.61  # any t in [0.30, 0.61] separates (p > t): the nearest to 0.7
    threshold, _ = best_f1_threshold(probs, positive, anchor=0.5)
    assert threshold == 0.5  # the plateau holds the anchor: it stays
    assert best_f1_threshold(probs, positive, anchor=0.5) == best_f1_threshold(probs, positive, anchor=0.5)
    # never outside the clip range, even when every p is tiny
    low, _ = best_f1_threshold(torch.tensor([0.01, 0.02, 0.03]), torch.tensor([False, True, True]), 0.7)
    assert GRID[0] <= low <= GRID[-1]


def test_calibrate_thresholds_per_finding_with_fallback_and_label_policy(monkeypatch):
    monkeypatch.setattr(calibrate, "MIN_POSITIVES", 2)
    monkeypatch.setattr(calibrate, "MIN_NEGATIVES", 2)
    names = ["Edema", "Fracture", "Pneumonia"]
    probs = torch.tensor(
        [[0.9, 0.1, 0.8], [0.8, 0.2, 0.7], [0.45, 0.9, 0.6], [0.2, 0.1, 0.1], [0.1, 0.3, 0.2]]
    )
    labels = torch.tensor([[1, 0, -1], [1, NAN, -1], [1, 1, 1], [0, 0, 0], [NAN, 0, 0]], dtype=torch.float32)
    content = calibrate_thresholds(probs, labels, names, "ignore", fallback=0.7, split="val", rule="max_f1")
    assert content["format"] == "leadrrg.thresholds/1" and content["calibrated_on"] == "val"
    assert content["rule"] == "max_f1" and content["range"] == [0.05, 0.95] and content["studies"] == 5
    assert content["thresholds"]["Edema"] < 0.45  # 0.7 would omit the third positive
    assert content["findings"]["Edema"]["f1"] == 1.0 and content["findings"]["Edema"]["f1_at_fallback"] < 1.0
    assert "Fracture" not in content["thresholds"]  # one positive: the fallback
    fracture = content["findings"]["Fracture"]
    assert fracture["threshold"] is None and fracture["positives"] == 1 and "positives" in fracture["reason"]
    # label policy `ignore`: the two uncertain Pneumonia labels are left out, not counted as negatives
    assert content["findings"]["Pneumonia"]["n"] == 3 and "Pneumonia" not in content["thresholds"]
    ones = calibrate_thresholds(probs, labels, names, "ones", fallback=0.7, rule="max_f1")
    assert ones["findings"]["Pneumonia"]["positives"] == 3 and ones["thresholds"]["Pneumonia"] < 0.6
    json.dumps(content, allow_nan=False)  # the file is plain JSON


def test_the_precision_rule_takes_the_lowest_threshold_that_keeps_hallucination_under_a_tenth(monkeypatch):
    monkeypatch.setattr(calibrate, "MIN_POSITIVES", 2)
    monkeypatch.setattr(calibrate, "MIN_NEGATIVES", 2)
    monkeypatch.setattr(calibrate, "MIN_PREDICTED", 2)
    # Edema: positives at 0.9, 0.8, 0.6, 0.3; negatives at 0.5 and 0.2: p > 0.5 is all right (precision 1), p > 0.29
    # calls one negative among five (0.8 < 0.9). Fracture: a negative above every positive: never 0.9 precise.
    probs = torch.tensor([[0.9, 0.9], [0.8, 0.2], [0.6, 0.3], [0.3, 0.1], [0.5, 0.95], [0.2, 0.1]])
    labels = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0], [0, 0], [0, 0]], dtype=torch.float32)
    content = calibrate_thresholds(probs, labels, ["Edema", "Fracture"], "ones", fallback=0.7)
    assert content["rule"] == "precision" and "0.9" in content["rule_text"]
    assert content["thresholds"]["Edema"] == 0.5  # the lowest grid t with p > t precise enough
    assert (
        "Fracture" not in content["thresholds"] and "precision" in content["findings"]["Fracture"]["reason"]
    )
    with pytest.raises(LeadrrgError, match="calibration rule"):
        calibrate_thresholds(probs, labels, ["Edema", "Fracture"], "ones", fallback=0.7, rule="youden")


@pytest.mark.parametrize("split", ["test", "shift_test", "Test"])
def test_test_splits_are_refused(split):
    with pytest.raises(LeadrrgError, match="test split"):
        calibrate_run("does-not-matter", split)


# --------------------------------------------------------------------------------------------------
# The setting and what the decoder reads


def test_decode_thresholds_setting_and_its_errors():
    assert DecodeConfig().thresholds == "global"  # selected on the selection set (docs/FAITHFULNESS.md)
    decode = DecodeConfig(expert_threshold=0.7, thresholds="calibrated", expert_thresholds={"Edema": 0.4})
    assert decode.threshold_for("Edema") == 0.4 and decode.threshold_for("Cardiomegaly") == 0.7
    glob = DecodeConfig(expert_threshold=0.7, thresholds="global", expert_thresholds={"Edema": 0.4})
    assert glob.threshold_for("Edema") == 0.7
    for bad, match in (
        ({"thresholds": "best"}, "decode.thresholds"),
        ({"expert_thresholds": {"Edemaa": 0.4}}, "CheXpert observations"),
        ({"expert_thresholds": {"Edema": 1.0}}, r"\(0, 1\)"),
        ({"expert_thresholds": [0.4]}, "expected an object"),
    ):
        with pytest.raises(LeadrrgError, match=match):
            DecodeConfig(**bad)
    from leadrrg.config import RunConfig

    config = apply_overrides(
        RunConfig(), ['decode.expert_thresholds={"Edema": 0.35}', "decode.thresholds=global"]
    )
    assert config.decode.expert_thresholds == {"Edema": 0.35} and config.decode.thresholds == "global"
    # the marks: the threshold the decoder uses; SOFT_MARK where it reads soft p and none is set
    assert expert_thresholds(DecodeConfig(expert_threshold=0.0), ["Edema"]) == {"Edema": SOFT_MARK}
    assert expert_thresholds(decode, ["Edema", "Cardiomegaly"]) == {"Edema": 0.4, "Cardiomegaly": 0.7}


def test_the_decoder_reads_each_expert_against_its_own_threshold():
    model = build(tiny_model_config())
    perturb_zero_init(model)
    batch = tiny_batch()
    images, views = batch["images"], batch["view_mask"]
    soft = torch.tensor([[0.3, 0.8, 0.6], [0.75, 0.1, 0.5]])  # EXPERTS order
    own = {EXPERTS[0]: 0.25, EXPERTS[2]: 0.55}
    expected = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # 0.3 > 0.25, 0.8 > 0.7, 0.6 > 0.55, ...
    model.eval()
    with torch.no_grad():
        per_finding = decoding_context(
            model,
            images,
            views,
            DecodeConfig(expert_threshold=0.7, thresholds="calibrated", expert_thresholds=own),
            soft,
        )
        binary = decoding_context(model, images, views, DecodeConfig(expert_threshold=0.5), expected)
        glob = decoding_context(
            model, images, views, DecodeConfig(expert_thresholds=own, thresholds="global"), soft
        )
        single = decoding_context(
            model, images, views, DecodeConfig(expert_threshold=0.5), (soft > 0.7).float()
        )
    assert torch.equal(per_finding.expert_tokens, binary.expert_tokens)
    assert torch.equal(glob.expert_tokens, single.expert_tokens)
    assert not torch.equal(per_finding.expert_tokens, glob.expert_tokens)
    assert torch.equal(per_finding.expert_probs, soft)  # the reported p stay raw


def test_contradictions_flag_omitted_and_unsupported_experts():
    probs = {
        "Edema": 0.61,
        "Cardiomegaly": 0.2,
        "Pleural Effusion": 0.9,
        "Pneumonia": 0.1,
        "Atelectasis": 0.5,
    }
    thresholds = {
        "Edema": 0.45,
        "Cardiomegaly": 0.7,
        "Pleural Effusion": 0.7,
        "Pneumonia": 0.5,
        "Atelectasis": 0.5,
    }
    findings = {"Edema": None, "Cardiomegaly": 1, "Pleural Effusion": 1, "Pneumonia": -1, "Atelectasis": 0}
    out = contradictions(probs, thresholds, findings)
    assert out == [
        {"expert": "Edema", "p": 0.61, "threshold": 0.45, "kind": "omitted"},
        {"expert": "Cardiomegaly", "p": 0.2, "threshold": 0.7, "kind": "unsupported"},
        {"expert": "Pneumonia", "p": 0.1, "threshold": 0.5, "kind": "unsupported"},  # uncertain is stated
    ]  # Effusion agrees; Atelectasis at exactly its threshold is not above it (the decoder's p > t)


# --------------------------------------------------------------------------------------------------
# A run: calibrate, load, generate, the CLI and the page


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "val": 8, "test": 1}, views=1)


@pytest.fixture()
def run_dir(tmp_path, data_root):
    return write_tiny_run(tmp_path / "run", data_root, max_new_tokens=6)


def test_calibrate_run_writes_the_file_and_load_reads_it(run_dir, monkeypatch):
    assert read_thresholds(run_dir) is None
    monkeypatch.setattr(calibrate, "MIN_POSITIVES", 1)
    monkeypatch.setattr(calibrate, "MIN_NEGATIVES", 1)
    content = calibrate_run(
        run_dir, "val", device="cpu", rule="max_f1"
    )  # an untrained run: never 0.9 precise
    saved = json.loads((run_dir / THRESHOLDS_FILE).read_text())
    assert saved == content and saved["calibrated_on"] == "val" and saved["studies"] == 8
    assert set(saved["findings"]) == set(EXPERTS) and saved["thresholds"]
    assert not list(run_dir.glob("*.tmp*")) and not list(
        run_dir.glob(".*thresholds*")
    )  # atomic: no leftovers
    assert leadrrg.load(run_dir, device="cpu").config.decode.expert_thresholds == {}  # global by default
    generator = leadrrg.load(run_dir, device="cpu", overrides=CALIBRATED)
    assert generator.config.decode.expert_thresholds == saved["thresholds"]
    result = generator.generate(str(write_png(run_dir.parent / "x.png", seed=3)))
    for name in EXPERTS:
        assert result.thresholds[name] == saved["thresholds"].get(name, 0.7)
    assert result.contradictions == contradictions(result.expert_probs, result.thresholds, result.findings)
    as_dict = result.to_dict()
    assert as_dict["thresholds"] == result.thresholds and as_dict["contradictions"] == result.contradictions
    # global: the file is ignored; explicit thresholds win over the file
    assert (
        leadrrg.load(run_dir, "cpu", overrides=["decode.thresholds=global"]).config.decode.expert_thresholds
        == {}
    )
    explicit = leadrrg.load(
        run_dir, "cpu", overrides=[*CALIBRATED, 'decode.expert_thresholds={"Edema": 0.33}']
    )
    assert explicit.config.decode.expert_thresholds["Edema"] == 0.33


def test_thresholds_of_other_weights_are_ignored_and_a_damaged_file_is_named(run_dir, caplog):
    (run_dir / THRESHOLDS_FILE).write_text(
        json.dumps(
            {"format": "leadrrg.thresholds/1", "thresholds": {"Edema": 0.3}, "weights_sha256": "other"}
        )
    )
    with caplog.at_level(logging.WARNING, logger="leadrrg"):
        generator = leadrrg.load(run_dir, device="cpu", overrides=CALIBRATED)
    assert generator.config.decode.expert_thresholds == {} and "other weights" in caplog.text
    (run_dir / THRESHOLDS_FILE).write_text(
        json.dumps({"format": "leadrrg.thresholds/1", "thresholds": {"Edema": 2}})
    )
    with pytest.raises(LeadrrgError, match="thresholds.json"):
        leadrrg.load(run_dir, device="cpu", overrides=CALIBRATED)


def test_the_cli_calibrates_and_generate_and_explain_print_the_thresholds(run_dir, tmp_path, capsys):
    assert main(["calibrate", "--run", str(run_dir), "--split", "test"]) == 2
    assert "test split" in capsys.readouterr().err
    assert main(["calibrate", "--run", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "fallback" in out and f"wrote {run_dir / THRESHOLDS_FILE}" in out  # 8 studies: too few positives
    assert read_thresholds(run_dir)["thresholds"] == {}
    image = write_png(tmp_path / "frontal.png", seed=5)
    assert (
        main(["generate", "--run", str(run_dir), "--images", str(image), "--set", "decode.max_new_tokens=6"])
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"Edema\s+!? threshold 0\.70  p \d\.\d{3}", out)
    assert "The report contradicts" in out or "agrees with every expert" in out
    html = tmp_path / "study.html"
    assert main(["explain", "--run", str(run_dir), "--images", str(image), "--out", str(html)]) == 0
    assert "0.70" in capsys.readouterr().out
    embedded = json.loads(
        re.search(r"window\.LEADRRG_EMBEDDED = (.*?);</script>", html.read_text())
        .group(1)
        .replace("<\\/", "</")
    )
    assert embedded["result"]["thresholds"] == {name: 0.7 for name in EXPERTS}
    assert "contradictions" in embedded["result"]


def test_prediction_records_with_evidence_carry_thresholds(run_dir, data_root, tmp_path):
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--run", str(run_dir), "--data", str(data_root), "--split", "val", "--out", str(out)]
    assert main([*args, "--evidence", "--limit", "2", "--set", "decode.max_new_tokens=4"]) == 0
    for line in out.read_text().splitlines():
        record = json.loads(line)
        assert set(record["thresholds"]) == set(EXPERTS) and isinstance(record["contradictions"], list)


def test_training_ends_with_a_calibrated_run(tmp_path):
    from leadrrg.train.loop import train
    from tests.test_train_helpers import make_synth, tiny_config

    data = make_synth(tmp_path / "synth", train=8, val=12)
    config = tiny_config(data, "train.max_steps=2")
    train(config, tmp_path / "run", quiet=True)
    content = read_thresholds(tmp_path / "run")
    assert content is not None and content["calibrated_on"] == "val" and content["studies"] == 12
    assert set(content["findings"]) == set(config.model.experts.names)


# --------------------------------------------------------------------------------------------------
# The page in a real browser: the threshold mark on every bar, contradicted experts flagged


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium as in tests/test_page_browser.py (skips without it unless LEADRRG_REQUIRE_BROWSER)."""
    import os

    pytest.importorskip("fastapi")
    from tests.test_page_browser import find_browser

    found = find_browser()
    if found is None:
        if os.environ.get("LEADRRG_REQUIRE_BROWSER"):
            pytest.fail("no chromium + chromedriver on PATH; LEADRRG_REQUIRE_BROWSER is set")
        pytest.skip("no chromium + chromedriver on PATH")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_page_marks_thresholds_and_contradictions(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from leadrrg.inference.inputs import to_gray
    from leadrrg.serve.render import explain_html, preview_png

    image = write_png(tmp_path / "frontal.png", seed=5)
    own = '{"Edema": 0.05, "Cardiomegaly": 0.95}'  # Edema read present, Cardiomegaly absent: likely contradicted
    generator = leadrrg.load(run_dir, "cpu", overrides=[*CALIBRATED, f"decode.expert_thresholds={own}"])
    result = generator.generate(str(image), evidence=True).to_dict()
    html = tmp_path / "study.html"
    html.write_text(explain_html(result, [("frontal.png", preview_png(to_gray(str(image))))], "run"))
    browser.get(html.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
    )
    bars = browser.find_elements(By.CSS_SELECTOR, "#experts .expert-bar")
    assert (
        len(bars) == len(EXPERTS) and len(browser.find_elements(By.CSS_SELECTOR, "#experts .bar-mark")) == 3
    )
    marks = {b.text.split("\n")[0]: float(b.get_attribute("data-threshold")) for b in bars}
    assert marks == result["thresholds"] and marks["Edema"] == 0.05
    flagged = {b.text.split("\n")[0] for b in bars if "contradicted" in b.get_attribute("class")}
    assert flagged == {item["expert"] for item in result["contradictions"]}
    summary = browser.find_element(By.ID, "contradictions").text
    assert ("contradicts" in summary) == bool(flagged) and ("agrees" in summary) == (not flagged)


def test_the_page_draws_the_uncertainty_band(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from leadrrg.inference.inputs import to_gray
    from leadrrg.serve.render import explain_html, preview_png

    image = write_png(tmp_path / "frontal.png", seed=5)
    generator = leadrrg.load(
        run_dir, "cpu", overrides=["decode.expert_threshold=0.7", "decode.hedge_band=0.2"]
    )
    result = generator.generate(str(image)).to_dict()
    assert result["hedge_floors"] == {name: pytest.approx(0.5) for name in EXPERTS}
    html = tmp_path / "band.html"
    html.write_text(explain_html(result, [("frontal.png", preview_png(to_gray(str(image))))], "run"))
    browser.get(html.as_uri())
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done"
    )
    bars = browser.find_elements(By.CSS_SELECTOR, "#experts .expert-bar")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#experts .bar-band")) == len(EXPERTS)
    assert len(bars) == len(EXPERTS) and all(float(b.get_attribute("data-floor")) == 0.5 for b in bars)
