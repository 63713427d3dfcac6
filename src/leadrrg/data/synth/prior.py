"""SynthCXR's prior: drawing which findings a study has, and their severity, side and zone.

`sample_findings` follows the co-occurrence prior of a `SynthConfig` (syndromes couple findings, their
sides and zones) or, for the shift split, draws each finding independently at the prior's marginal
prevalence (`marginal_prevalence`); `findings_from_labels` gives given CheXpert labels random attributes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.data.synth.types import (
    ALLOWED_SIDES,
    ALLOWED_ZONES,
    DEVICES,
    FINDING_NAMES,
    SEVERITIES,
    SIDES,
    ZONES,
    Finding,
    Findings,
    SynthConfig,
)
from leadrrg.errors import LeadrrgError

__all__ = ["findings_from_labels", "marginal_prevalence", "normal_share", "sample_findings"]


def _sample_presence(rng: np.random.Generator, config: SynthConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prior draw of which findings are present: (n, 13) bool over FINDING_NAMES, (n, S) active syndromes."""
    index = {name: i for i, name in enumerate(FINDING_NAMES)}
    background = np.array([config.background.get(name, 0.0) for name in FINDING_NAMES])
    present = rng.random((n, len(FINDING_NAMES))) < background
    active = np.zeros((n, len(config.syndromes)), dtype=bool)
    for s, syndrome in enumerate(config.syndromes):
        active[:, s] = rng.random(n) < syndrome.rate
        probs = np.array([syndrome.findings.get(name, 0.0) for name in FINDING_NAMES])
        present |= active[:, s : s + 1] & (rng.random((n, len(FINDING_NAMES))) < probs)
    for cause, effect, p in config.implications:
        present[:, index[effect]] |= present[:, index[cause]] & (rng.random(n) < p)
    return present, active


@functools.lru_cache(maxsize=16)
def _marginals_cached(config_json: str) -> tuple[float, ...]:
    """The 13 marginal prevalences, then the share of normal studies (nothing but Support Devices)."""
    config = SynthConfig.from_dict(json.loads(config_json))
    present, _ = _sample_presence(np.random.default_rng(20260204), config, 200_000)
    normal = ~np.delete(present, FINDING_NAMES.index("Support Devices"), axis=1).any(axis=1)
    return (*present.mean(axis=0).tolist(), float(normal.mean()))


def marginal_prevalence(config: SynthConfig) -> dict[str, float]:
    """Marginal prevalence of each finding under the prior (Monte Carlo, fixed seed, 200k draws)."""
    return dict(zip(FINDING_NAMES, _marginals_cached(config.to_json())[: len(FINDING_NAMES)]))


def normal_share(config: SynthConfig) -> float:
    """Share of studies under the prior with No Finding (nothing but Support Devices), same draws as above."""
    return _marginals_cached(config.to_json())[-1]


def _pick(rng: np.random.Generator, options: tuple[str, ...], weights: list[float] | None = None) -> str:
    if weights is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _random_devices(rng: np.random.Generator, critical_care: bool) -> tuple[str, ...]:
    if critical_care:
        chosen = [d for d, p in zip(DEVICES, (0.7, 0.6, 0.6, 0.15, 0.1)) if rng.random() < p]
    else:
        chosen = [d for d, p in zip(DEVICES, (0.15, 0.15, 0.25, 0.25, 0.4)) if rng.random() < p]
    if not chosen:
        chosen = [_pick(rng, DEVICES)]
    return tuple(chosen)


def _attributes(
    rng: np.random.Generator,
    name: str,
    config: SynthConfig,
    side: str | None = None,
    zone: str | None = None,
    critical_care: bool = False,
) -> Finding:
    severity = _pick(rng, SEVERITIES, config.severity_weights)
    sides = ALLOWED_SIDES.get(name, SIDES)
    if side not in sides:
        side = _pick(rng, sides, [0.4, 0.4, 0.2][: len(sides)] if len(sides) == 3 else None)
    zones = ALLOWED_ZONES.get(name, ("lower",))
    if zone not in zones:
        zone = _pick(rng, zones)
    devices = _random_devices(rng, critical_care) if name == "Support Devices" else ()
    return Finding(severity=severity, side=side, zone=zone, devices=devices)


def sample_findings(
    rng: np.random.Generator, config: SynthConfig | None = None, independent: bool = False
) -> Findings:
    """Draw one study's findings.

    independent=False: the train prior (syndromes couple findings, their sides and zones).
    independent=True: each finding independently at the prior's marginal prevalence, attributes independent
    too (the shift split, where following the prior instead of the image produces hallucinations)."""
    config = config or SynthConfig()
    if independent:
        marginals = np.array(list(marginal_prevalence(config).values()))
        present = rng.random(len(FINDING_NAMES)) < marginals
        return Findings(
            {name: _attributes(rng, name, config) for name, on in zip(FINDING_NAMES, present) if on}
        )
    present, active = _sample_presence(rng, config, 1)
    present, active = present[0], active[0]
    # The study's dominant side and zone: the syndromes' findings share them.
    main_side = _pick(rng, ("right", "left"))
    bilateral = any(
        s.bilateral > 0 and rng.random() < s.bilateral for s, on in zip(config.syndromes, active) if on
    )
    main_zone = _pick(rng, ZONES, [0.25, 0.15, 0.6])
    critical_care = any(on and s.name == "critical_care" for s, on in zip(config.syndromes, active))
    out: dict[str, Finding] = {}
    for name, on in zip(FINDING_NAMES, present):
        if not on:
            continue
        side = None
        if rng.random() < config.side_coupling:
            side = "bilateral" if bilateral and name in ("Pleural Effusion", "Atelectasis") else main_side
        out[name] = _attributes(rng, name, config, side, main_zone, critical_care)
    return Findings(out)


def findings_from_labels(
    labels: Any, rng: np.random.Generator, config: SynthConfig | None = None
) -> Findings:
    """Findings for given 14 CheXpert labels (1 present; 0, -1 and NaN absent), with random attributes."""
    values = np.asarray(labels, dtype=np.float64).reshape(-1)
    if values.shape != (NUM_OBSERVATIONS,):
        raise LeadrrgError(f"labels have {values.size} values; expected {NUM_OBSERVATIONS} in CheXpert order")
    config = config or SynthConfig()
    return Findings(
        {
            name: _attributes(rng, name, config)
            for name, v in zip(OBSERVATIONS, values)
            if name != "No Finding" and v == 1
        }
    )
