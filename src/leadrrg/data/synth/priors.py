"""SynthCXR's family of priors: `random_prior(seed)` draws a co-occurrence prior of its own.

The default prior (`SynthConfig()`, four hand-written syndromes) is the development prior. A recipe selected on
it alone may have learnt that prior rather than to follow the image, so `leadrrg synth --prior-seed S` and
`leadrrg bench faithfulness --priors K` draw others: which findings co-occur, how strongly, and which imply
which. Every draw comes from one generator seeded by (PRIOR_STREAM, seed) alone, so a seed is a prior.

The ranges (`RANGES`, all uniform; the default prior's values in brackets for comparison):

- 3 to 5 syndromes [4], each with 2 to 4 core findings, disjoint across syndromes (a random permutation of
  the 13 findings is cut into the cores) [2 to 4, overlapping];
- P(core finding | syndrome) in [0.6, 0.95] [0.25 to 0.95]; the syndrome's rate in [0.06, 0.14] [0.04 to
  0.12]; P(its lateral findings are bilateral) in [0, 0.6] [0 to 0.6];
- every finding left out of the cores joins one random syndrome as a weak member, and each syndrome may (half
  the time) take one more weak member, P(weak | syndrome) in [0.15, 0.4] [0.2 to 0.3];
- background (independent) rate of every finding in [0.02, 0.05] [0.015 to 0.07];
- 1 to 3 implications [cause, effect, P] between distinct findings, P in [0.25, 0.6] [0.3, 0.45];
- a draw is kept only when every finding's marginal prevalence is in [0.03, 0.30] (so at the benchmark's 200
  studies per evaluation split every finding is expected at least 6 times in every split; the default's are
  0.03 to 0.16) and the share of normal studies is in [0.25, 0.75]; otherwise the same generator draws again.

Severity weights, side coupling, hedging and negatives stay at the default's: the family varies which
findings co-occur, not the report style. A syndrome whose core holds Support Devices is named
`critical_care`, so its devices are the ICU kind (as the default's); the others are `syndrome_<k>`.
"""

from __future__ import annotations

import numpy as np

from leadrrg.data.synth.prior import marginal_prevalence, normal_share
from leadrrg.data.synth.types import FINDING_NAMES, Syndrome, SynthConfig
from leadrrg.errors import LeadrrgError

__all__ = ["RANGES", "check_prior_seed", "random_prior"]

PRIOR_STREAM = 0x5EED_9A10  # keeps prior seed S apart from data seed S
MAX_DRAWS = 200

RANGES: dict[str, tuple[float, float]] = {
    "syndromes": (3, 5),
    "core_findings": (2, 4),
    "core_probability": (0.6, 0.95),
    "syndrome_rate": (0.06, 0.14),
    "bilateral": (0.0, 0.6),
    "weak_probability": (0.15, 0.4),
    "background": (0.02, 0.05),
    "implications": (1, 3),
    "implication_probability": (0.25, 0.6),
    "marginal_prevalence": (0.03, 0.30),
    "normal_share": (0.25, 0.75),
}


def check_prior_seed(seed: object, where: str = "prior seed") -> int:
    """The seed as an int, or a LeadrrgError naming `where`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise LeadrrgError(f"{where} is {seed!r}; expected a non-negative integer")
    return int(seed)


def _uniform(rng: np.random.Generator, key: str) -> float:
    low, high = RANGES[key]
    return round(float(rng.uniform(low, high)), 3)


def _count(rng: np.random.Generator, key: str) -> int:
    low, high = RANGES[key]
    return int(rng.integers(int(low), int(high) + 1))


def _syndromes(rng: np.random.Generator) -> list[Syndrome]:
    order = [FINDING_NAMES[i] for i in rng.permutation(len(FINDING_NAMES))]
    cores: list[list[str]] = []
    for _ in range(_count(rng, "syndromes")):
        size = _count(rng, "core_findings")
        if len(order) < 2:
            break
        cores.append(order[:size])
        order = order[size:]
    members = [{name: _uniform(rng, "core_probability") for name in core} for core in cores]
    for name in order:  # left out of every core: a weak member of one syndrome
        members[int(rng.integers(len(members)))][name] = _uniform(rng, "weak_probability")
    for findings in members:
        if rng.random() < 0.5:
            others = [name for name in FINDING_NAMES if name not in findings]
            findings[others[int(rng.integers(len(others)))]] = _uniform(rng, "weak_probability")
    syndromes = []
    for k, (core, findings) in enumerate(zip(cores, members)):
        name = "critical_care" if "Support Devices" in core else f"syndrome_{k + 1}"
        ordered = {f: findings[f] for f in FINDING_NAMES if f in findings}
        syndromes.append(
            Syndrome(name, _uniform(rng, "syndrome_rate"), ordered, bilateral=_uniform(rng, "bilateral"))
        )
    return syndromes


def _implications(rng: np.random.Generator) -> list[list]:
    rules: list[list] = []
    pairs: set[frozenset[str]] = set()
    count = _count(rng, "implications")
    while len(rules) < count:
        cause, effect = (FINDING_NAMES[i] for i in rng.choice(len(FINDING_NAMES), size=2, replace=False))
        if frozenset((cause, effect)) in pairs:
            continue
        pairs.add(frozenset((cause, effect)))
        rules.append([cause, effect, _uniform(rng, "implication_probability")])
    return rules


def _acceptable(config: SynthConfig) -> bool:
    low, high = RANGES["marginal_prevalence"]
    share_low, share_high = RANGES["normal_share"]
    prevalences = marginal_prevalence(config).values()
    return all(low <= p <= high for p in prevalences) and share_low <= normal_share(config) <= share_high


def random_prior(seed: int) -> SynthConfig:
    """A SynthCXR prior of its own, deterministic in `seed` (a non-negative integer); see the module docstring."""
    seed = check_prior_seed(seed)
    rng = np.random.default_rng([PRIOR_STREAM, seed])
    for _ in range(MAX_DRAWS):
        background = {name: _uniform(rng, "background") for name in FINDING_NAMES}
        config = SynthConfig(
            background=background, syndromes=_syndromes(rng), implications=_implications(rng), prior_seed=seed
        )
        if _acceptable(config):
            return config
    raise LeadrrgError(
        f"prior seed {seed}: no draw in {MAX_DRAWS} met the prevalence ranges; try another seed"
    )
