"""NLG metrics: R2Gen normalisation, golden values from pycocoevalcap 1.2, METEOR without Java."""

from __future__ import annotations

import shutil
import stat

import pytest

from leadrrg.metrics.nlg import java_version, nlg_scores, normalize_report

HAVE_JAVA = shutil.which("java") is not None

# A fixed tiny corpus, already in normalised form (so the golden values do not depend on our cleaner).
REFERENCES = [
    "the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax .",
    "there is a small left pleural effusion . mild cardiomegaly .",
    "the lungs are clear . no acute cardiopulmonary abnormality .",
    "bibasilar atelectasis . no pneumothorax .",
]
HYPOTHESES = [
    "the heart is normal . the lungs are clear . no pleural effusion .",
    "small right pleural effusion . the heart is enlarged .",
    "the lungs are clear . no acute abnormality .",
    "there is no pneumothorax . mild atelectasis at the bases .",
]

# Golden values: obtained once by calling pycocoevalcap 1.2 directly (not through leadrrg) in a scratch
# script, on {i: [REFERENCES[i]]} / {i: [HYPOTHESES[i]]}: Bleu(4).compute_score(gts, res, verbose=0),
# Meteor().compute_score (meteor-1.5.jar, OpenJDK 17.0.15), Rouge().compute_score, Cider().compute_score.
GOLDEN = {
    "bleu_1": 0.755363353888432,
    "bleu_2": 0.6372709709191049,
    "bleu_3": 0.5608737846708963,
    "bleu_4": 0.4934486334012862,
    "meteor": 0.3719016133671842,
    "rouge_l": 0.6597544854637303,
    "cider": 3.3648847865915066,
}
# Same scratch script, with HYPOTHESES[3] replaced by the empty string (METEOR not run).
GOLDEN_EMPTY_LAST = {
    "bleu_1": 0.6108840582529006,
    "bleu_2": 0.532072892263925,
    "bleu_3": 0.47816908955852977,
    "bleu_4": 0.4320163348879711,
    "rouge_l": 0.5665772960543617,
    "cider": 3.034557473538138,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The heart is normal. No effusion!", "the heart is normal . no effusion ."),
        ("Heart size normal.\nLungs: clear, no nodule.", "heart size normal . lungs clear no nodule ."),
        # numbered-list markers become sentence breaks; digits are kept
        ("1. Stable 3 cm nodule. 2. No effusion..", "stable 3 cm nodule . no effusion ."),
        # as in R2Gen: hyphens kept, '/' and decimal points deleted, ':'..'[' (a regex range) deleted
        (
            "Right-sided (small) effusion; it's 'stable' / unchanged",
            "right-sided small effusion its stable unchanged .",
        ),
        (
            "A 1.5 cm nodule, and/or <b>=c @d [e] {f} back\\slash - g",
            "a 15 cm nodule andor bc d e f backslash - g .",
        ),
        ("a.b", "ab ."),
        ("", ""),
        ("  ...  ", ""),
        ("XXXX ||| ___ seen", "xxxx seen ."),
    ],
)
def test_normalize_report(raw, expected):
    assert normalize_report(raw) == expected


def test_normalized_text_is_a_fixed_point():
    for text in REFERENCES + HYPOTHESES:
        assert normalize_report(text) == text


@pytest.fixture(scope="module")
def golden_scores():
    # one METEOR run for the module: the JVM takes seconds to start
    return nlg_scores(REFERENCES, HYPOTHESES, meteor=HAVE_JAVA)


@pytest.mark.parametrize("name", ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"])
def test_golden_values(golden_scores, name):
    assert golden_scores[name] == pytest.approx(GOLDEN[name], abs=1e-6)


@pytest.mark.skipif(not HAVE_JAVA, reason="METEOR needs java on PATH")
def test_golden_meteor(golden_scores):
    assert golden_scores["missing"] == {}
    assert golden_scores["meteor"] == pytest.approx(GOLDEN["meteor"], abs=1e-6)


@pytest.mark.skipif(not HAVE_JAVA, reason="METEOR needs java on PATH")
def test_meteor_runs_one_jvm_per_process():
    from leadrrg.metrics import nlg

    first = nlg_scores(REFERENCES, HYPOTHESES)["meteor"]
    process = nlg._SCORER[1].meteor_p
    assert nlg_scores(REFERENCES, HYPOTHESES)["meteor"] == first == pytest.approx(GOLDEN["meteor"], abs=1e-6)
    assert nlg._SCORER[1].meteor_p is process and process.poll() is None  # the same JVM, still running


def test_golden_values_with_empty_hypothesis():
    scores = nlg_scores(REFERENCES, HYPOTHESES[:3] + [""], meteor=False)
    for name, value in GOLDEN_EMPTY_LAST.items():
        assert scores[name] == pytest.approx(value, abs=1e-6), name


def test_all_empty_hypotheses_score_zero():
    scores = nlg_scores(REFERENCES[:2], ["", "   ,,, "], meteor=False)
    for name in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert scores[name] == 0.0


def test_identical_reports_score_one():
    scores = nlg_scores(REFERENCES, REFERENCES, meteor=False)
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name


def test_normalisation_is_applied_to_both_sides():
    raw = ["The Heart is normal.  No effusion!", "Lungs: clear."]
    clean = [normalize_report(text) for text in raw]
    assert nlg_scores(raw, clean, meteor=False)["bleu_4"] == pytest.approx(1.0, abs=1e-6)


def test_meteor_missing_without_java(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java
    scores = nlg_scores(REFERENCES, HYPOTHESES)
    assert scores["meteor"] is None
    assert "java not found on PATH" in scores["missing"]["meteor"]
    assert scores["bleu_4"] == pytest.approx(GOLDEN["bleu_4"], abs=1e-6)
    assert java_version() is None


def test_meteor_missing_when_the_jar_fails(monkeypatch, tmp_path):
    fake_java = tmp_path / "java"
    fake_java.write_text('#!/bin/sh\necho "Error: Unable to access jarfile meteor-1.5.jar" >&2\nexit 1\n')
    fake_java.chmod(fake_java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    scores = nlg_scores(REFERENCES, HYPOTHESES)
    assert scores["meteor"] is None
    assert "METEOR jar failed" in scores["missing"]["meteor"]
    assert "Unable to access jarfile" in scores["missing"]["meteor"]
    assert scores["cider"] == pytest.approx(GOLDEN["cider"], abs=1e-6)


def test_meteor_disabled_is_reported():
    scores = nlg_scores(REFERENCES, HYPOTHESES, meteor=False)
    assert scores["meteor"] is None and "disabled" in scores["missing"]["meteor"]


@pytest.mark.skipif(not HAVE_JAVA, reason="needs java on PATH")
def test_java_version():
    assert "version" in java_version()


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        nlg_scores(["a", "b"], ["a"], meteor=False)
    with pytest.raises(ValueError, match="no reports"):
        nlg_scores([], [], meteor=False)
