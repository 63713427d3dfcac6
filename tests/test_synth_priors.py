"""SynthCXR's family of priors: `random_prior(seed)`, `leadrrg synth --prior-seed` and the default's bytes."""

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from leadrrg.cli import main
from leadrrg.data.synth.generate import FINDING_NAMES, SynthConfig, synthesize
from leadrrg.data.synth.prior import _sample_presence, marginal_prevalence, normal_share
from leadrrg.data.synth.priors import RANGES, random_prior
from leadrrg.errors import LeadrrgError

# sha256 over (relative path, bytes) of every file of the tiny data set below, taken with the committed code
# before random priors existed: the default prior's output must never change.
GOLDEN = "3cc3d9d5dec0940768f07c4ddc430372773eb316597074cb6b9538a9f57c77e5"
GOLDEN_COUNTS = {"train": 6, "val": 3, "test": 3, "shift_test": 3}


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_default_output_is_byte_identical_to_before(tmp_path):
    out = synthesize(tmp_path / "d", GOLDEN_COUNTS, size=64, seed=3, workers=1)
    assert _tree_hash(out) == GOLDEN
    assert "prior_seed" not in json.loads((out / "synth_config.json").read_text())


def test_random_prior_is_deterministic_in_its_seed_and_differs_across_seeds():
    assert random_prior(3) == random_prior(3)
    assert random_prior(3).to_json() == random_prior(3).to_json()
    priors = [random_prior(s) for s in range(4)]
    jsons = {p.to_json() for p in priors} | {SynthConfig().to_json()}
    assert len(jsons) == 5
    # not only the strengths: which findings co-occur differs
    groups = [{frozenset(s.findings) for s in p.syndromes} for p in priors]
    assert all(a != b for a, b in itertools.combinations(groups, 2))


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_random_prior_validates_and_stays_in_its_ranges(seed):
    prior = random_prior(seed)
    assert prior.prior_seed == seed
    again = SynthConfig.from_dict(json.loads(prior.to_json()))  # the SynthConfig checks, through the JSON
    assert again == prior
    low, high = RANGES["syndromes"]
    assert low <= len(prior.syndromes) <= high
    assert all(RANGES["background"][0] <= p <= RANGES["background"][1] for p in prior.background.values())
    assert set(prior.background) == set(FINDING_NAMES)
    for syndrome in prior.syndromes:
        assert RANGES["syndrome_rate"][0] <= syndrome.rate <= RANGES["syndrome_rate"][1]
    assert RANGES["implications"][0] <= len(prior.implications) <= RANGES["implications"][1]
    assert all(cause != effect for cause, effect, _ in prior.implications)
    # every finding is common enough to appear in every split (marginals also hold on the shift split)
    prevalence = marginal_prevalence(prior)
    assert min(prevalence.values()) >= RANGES["marginal_prevalence"][0]
    assert max(prevalence.values()) <= RANGES["marginal_prevalence"][1]
    assert RANGES["normal_share"][0] <= normal_share(prior) <= RANGES["normal_share"][1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_prior_has_a_strong_cooccurrence_structure(seed):
    prior = random_prior(seed)
    present, _ = _sample_presence(np.random.default_rng(0), prior, 40_000)
    corr = np.corrcoef(present.T)
    core_pairs = []
    for syndrome in prior.syndromes:
        core = [
            FINDING_NAMES.index(f) for f, p in syndrome.findings.items() if p >= RANGES["core_probability"][0]
        ]
        assert len(core) >= 2
        core_pairs += [corr[a, b] for a, b in itertools.combinations(core, 2)]
    assert min(core_pairs) > 0.15 and np.mean(core_pairs) > 0.3


def test_random_prior_rejects_a_bad_seed():
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(LeadrrgError, match="prior seed"):
            random_prior(bad)
    with pytest.raises(LeadrrgError, match="prior_seed"):
        SynthConfig(prior_seed=-2)
    with pytest.raises(LeadrrgError, match="prior_seed"):
        SynthConfig.from_dict({"prior_seed": 1.5})
    assert SynthConfig.from_dict({"prior_seed": None}) == SynthConfig()


def _synth_args(out: Path) -> list[str]:
    return [
        "synth",
        "--out",
        str(out),
        "--train",
        "20",
        "--val",
        "2",
        "--test",
        "2",
        "--shift-test",
        "4",
        "--size",
        "48",
        "--workers",
        "1",
        "--quiet",
    ]


def test_synth_prior_seed_writes_the_prior_to_synth_config(tmp_path, capsys):
    out = tmp_path / "p5"
    assert main([*_synth_args(out), "--prior-seed", "5"]) == 0
    assert "random prior 5" in capsys.readouterr().out
    held = SynthConfig.from_dict(json.loads((out / "synth_config.json").read_text()))
    assert held == random_prior(5) and held.prior_seed == 5
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 28
    default = tmp_path / "default"
    assert main(_synth_args(default)) == 0
    assert SynthConfig.from_dict(json.loads((default / "synth_config.json").read_text())) == SynthConfig()
    assert (out / "manifest.jsonl").read_text() != (default / "manifest.jsonl").read_text()
    # the same prior seed and data seed give the same bytes
    again = tmp_path / "again"
    assert main([*_synth_args(again), "--prior-seed", "5"]) == 0
    assert _tree_hash(again) == _tree_hash(out)


def test_synth_prior_seed_refuses_conflicts(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(SynthConfig().to_json())
    assert main([*_synth_args(tmp_path / "a"), "--prior-seed", "1", "--config", str(config)]) == 2
    assert "--prior-seed and --config" in capsys.readouterr().err
    assert main([*_synth_args(tmp_path / "b"), "--prior-seed", "-1"]) == 2
    assert "--prior-seed is -1" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "c"), "--reports", "iu", "--prior-seed", "1"]) == 2
    assert "--prior-seed" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
