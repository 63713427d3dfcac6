"""SynthCXR's shared types: the vocabulary of findings and the prior's configuration.

A leaf module (it imports no other synth module) that the sampler (`synth_prior`), the renderer
(`synth_render`, `synth_anatomy`), the report writer (`synth_reports`, `synth_phrases`) and the data set
writer (`synth`) all build on:

- SPLITS, FINDING_NAMES, SEVERITIES, SIDES, ZONES, DEVICES and which sides and zones each finding takes;
- `Finding` (one present observation's attributes) and `Findings` (a study's observations);
- `Syndrome` and `SynthConfig` (prevalences, co-occurrence and report style), JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS, SEVERITIES, SIDES
from leadrrg.errors import LeadrrgError

__all__ = [
    "ALLOWED_SIDES",
    "ALLOWED_ZONES",
    "DEVICES",
    "FINDING_NAMES",
    "SEVERITIES",
    "SIDES",
    "SPLITS",
    "ZONES",
    "Finding",
    "Findings",
    "Syndrome",
    "SynthConfig",
]

SPLITS: tuple[str, ...] = ("train", "val", "test", "shift_test")
FINDING_NAMES: tuple[str, ...] = OBSERVATIONS[1:]  # everything but No Finding
ZONES = ("upper", "middle", "lower")
DEVICES = (
    "endotracheal tube",
    "nasogastric tube",
    "central venous catheter",
    "picc",
    "pacemaker",
)
# Sternotomy wires are drawn and described (synth_render / synth_phrases) but not sampled: like the CheXpert
# labeler and the IU X-Ray annotations, leadrrg's labeler does not count them as a support device.

# Which sides and zones each observation can take (the first zone is the usual one).
ALLOWED_SIDES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("bilateral",),
    "Cardiomegaly": ("bilateral",),
    "Edema": ("bilateral",),
    "Support Devices": ("bilateral",),
    "Lung Lesion": ("right", "left"),
    "Fracture": ("right", "left"),
    "Pneumothorax": ("right", "left"),
    "Consolidation": ("right", "left"),
    "Pneumonia": ("right", "left"),
}
ALLOWED_ZONES: dict[str, tuple[str, ...]] = {
    "Lung Opacity": ("lower", "middle", "upper"),
    "Lung Lesion": ("upper", "middle", "lower"),
    "Consolidation": ("lower", "upper", "middle"),
    "Pneumonia": ("lower", "upper", "middle"),
    "Pleural Other": ("middle", "upper"),
    "Pneumothorax": ("upper",),
}


# --------------------------------------------------------------------------------------------------
# Findings


@dataclass(frozen=True)
class Finding:
    """Attributes of one present observation."""

    severity: str = "moderate"  # mild | moderate | large (small/moderate/large effusion, nodule vs mass, ...)
    side: str = "bilateral"  # right | left | bilateral: the PATIENT's side (right is the image's left)
    zone: str = "lower"  # upper | middle | lower lung zone
    devices: tuple[str, ...] = ()  # Support Devices only: entries of DEVICES


@dataclass
class Findings:
    """The observations present in one study (CheXpert names) with their attributes."""

    present: dict[str, Finding] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.present:
            if name not in FINDING_NAMES:
                raise LeadrrgError(f"unknown finding {name!r}; expected one of: {', '.join(FINDING_NAMES)}")

    def __contains__(self, name: str) -> bool:
        return name in self.present

    def get(self, name: str) -> Finding | None:
        return self.present.get(name)

    def positives(self) -> list[str]:
        """Present observations in CheXpert order (No Finding when nothing but devices is present)."""
        names = [name for name in FINDING_NAMES if name in self.present]
        return names if self.labels()[0] == 0 else ["No Finding", *names]

    def labels(self) -> np.ndarray:
        """(14,) int64 0/1 in CheXpert order; No Finding = 1 iff nothing but Support Devices is present."""
        out = np.zeros(NUM_OBSERVATIONS, dtype=np.int64)
        for i, name in enumerate(OBSERVATIONS):
            out[i] = int(name in self.present)
        out[0] = int(not any(name != "Support Devices" for name in self.present))
        return out

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            name: {**dataclasses.asdict(f), "devices": list(f.devices)}
            for name, f in sorted(self.present.items(), key=lambda kv: OBSERVATIONS.index(kv[0]))
        }

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> Findings:
        return cls(
            {
                name: Finding(**{**attrs, "devices": tuple(attrs.get("devices", ()))})
                for name, attrs in data.items()
            }
        )


# --------------------------------------------------------------------------------------------------
# The prior's parameters


@dataclass
class Syndrome:
    """A latent clinical picture that brings several findings together (the language prior)."""

    name: str
    rate: float  # probability that a study has this syndrome
    findings: dict[str, float]  # P(observation present | syndrome)
    same_side: bool = True  # lateral findings of the syndrome share one side
    bilateral: float = 0.0  # probability that its lateralisable findings are bilateral


def _default_background() -> dict[str, float]:
    return {
        "Enlarged Cardiomediastinum": 0.03,
        "Cardiomegaly": 0.05,
        "Lung Opacity": 0.07,
        "Lung Lesion": 0.05,
        "Edema": 0.015,
        "Consolidation": 0.02,
        "Pneumonia": 0.02,
        "Atelectasis": 0.06,
        "Pneumothorax": 0.03,
        "Pleural Effusion": 0.03,
        "Pleural Other": 0.03,
        "Fracture": 0.04,
        "Support Devices": 0.07,
    }


def _default_syndromes() -> list[Syndrome]:
    return [
        Syndrome(
            "heart_failure",
            0.12,
            {"Cardiomegaly": 0.9, "Pleural Effusion": 0.7, "Edema": 0.7, "Enlarged Cardiomediastinum": 0.25},
            same_side=True,
            bilateral=0.6,
        ),
        Syndrome(
            "infection",
            0.10,
            {"Pneumonia": 0.85, "Consolidation": 0.8, "Lung Opacity": 0.25, "Pleural Effusion": 0.2},
        ),
        Syndrome(
            "critical_care",
            0.08,
            {"Support Devices": 0.95, "Atelectasis": 0.6, "Pleural Effusion": 0.3, "Edema": 0.2},
            bilateral=0.4,
        ),
        Syndrome("trauma", 0.04, {"Fracture": 0.9, "Pneumothorax": 0.5, "Lung Opacity": 0.3}),
    ]


def _default_implications() -> list[list]:
    return [["Pleural Effusion", "Atelectasis", 0.45], ["Consolidation", "Pneumonia", 0.3]]


@dataclass
class SynthConfig:
    """Prevalences and co-occurrence of the train prior, and the report style. JSON-serialisable."""

    background: dict[str, float] = field(default_factory=_default_background)  # independent base rates
    syndromes: list[Syndrome] = field(default_factory=_default_syndromes)  # correlated clusters
    implications: list[list] = field(
        default_factory=_default_implications
    )  # [cause, effect, P(effect|cause)]
    severity_weights: list[float] = field(default_factory=lambda: [0.45, 0.35, 0.2])  # mild, moderate, large
    side_coupling: float = 0.85  # prior: P(a lateral finding takes the study's dominant side)
    hedge_rate: float = 0.08  # share of positive sentences hedged ("likely", "may represent")
    negative_rate: float = 0.8  # P(each relevant negative is stated)
    # The seed of `priors.random_prior` that drew this prior; None: a hand-written prior (the default). Left out
    # of the JSON when None, so the default's synth_config.json is what it always was.
    prior_seed: int | None = None

    def __post_init__(self) -> None:
        self.syndromes = [s if isinstance(s, Syndrome) else Syndrome(**s) for s in self.syndromes]
        names = set(FINDING_NAMES)
        for where, mapping in [("background", self.background)] + [
            (f"syndromes[{s.name}].findings", s.findings) for s in self.syndromes
        ]:
            for name, p in mapping.items():
                if name not in names:
                    raise LeadrrgError(f"synth config {where}: unknown observation {name!r}")
                if not 0.0 <= p <= 1.0:
                    raise LeadrrgError(f"synth config {where}[{name!r}] is {p!r}; expected a probability")
        for rule in self.implications:
            if len(rule) != 3 or rule[0] not in names or rule[1] not in names or not 0 <= rule[2] <= 1:
                raise LeadrrgError(
                    f"synth config implication {rule!r}; expected [cause, effect, probability]"
                )
        if (
            len(self.severity_weights) != 3
            or min(self.severity_weights) < 0
            or sum(self.severity_weights) <= 0
        ):
            raise LeadrrgError("synth config severity_weights must be three non-negative weights")
        for name in ("side_coupling", "hedge_rate", "negative_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise LeadrrgError(f"synth config {name} is {getattr(self, name)!r}; expected a probability")
        if self.prior_seed is not None and (not _is_a(self.prior_seed, int) or self.prior_seed < 0):
            raise LeadrrgError(
                f"synth config prior_seed is {self.prior_seed!r}; expected a non-negative integer"
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["prior_seed"] is None:
            del data["prior_seed"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        if not isinstance(data, dict):
            raise LeadrrgError(f"a synth config is a JSON object of settings, not a {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LeadrrgError(
                f"unknown synth config keys {sorted(unknown)}; expected: {', '.join(sorted(known))}"
            )
        for key, value in data.items():
            if not (key == "prior_seed" and value is None):
                _check_type(key, value, SYNTH_CONFIG_TYPES[key])
        try:
            return cls(**data)
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise LeadrrgError(
                f"synth config is not valid ({exc}); expected the layout of synth_config.json"
            ) from None


# key -> (JSON type, its items' type): what SynthConfig.from_dict accepts.
SYNTH_CONFIG_TYPES: dict[str, tuple[type, type | None]] = {
    "background": (dict, float),
    "syndromes": (list, dict),
    "implications": (list, list),
    "severity_weights": (list, float),
    "side_coupling": (float, None),
    "hedge_rate": (float, None),
    "negative_rate": (float, None),
    "prior_seed": (int, None),
}


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _check_type(key: str, value: Any, types: tuple[type, type | None]) -> None:
    outer, inner = types
    names = {dict: "an object", list: "a list", float: "a number", int: "an integer"}
    expected = names[outer] + (f" of {names[inner].split(' ', 1)[1]}s" if inner else "")
    items = (value.values() if isinstance(value, dict) else value) if inner else ()
    if not _is_a(value, outer) or not all(_is_a(item, inner) for item in items):
        raise LeadrrgError(f"synth config key {key!r} is {value!r}; expected {expected}")


SYNTH_MARKERS = ("synth_config.json", "synth_iu.json")  # files that only leadrrg synth writes


def check_synth_output(out: Path, overwrite: bool) -> None:
    """`out` may receive a new data set: absent, empty, or (with `overwrite`) an earlier leadrrg synth output."""
    if out.exists() and not out.is_dir():
        raise LeadrrgError(f"output {out} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise LeadrrgError(f"output directory {out} exists and is not empty; pass --overwrite to replace it")
    if not any((out / name).is_file() for name in SYNTH_MARKERS):
        raise LeadrrgError(
            f"output directory {out} is not a leadrrg synth data set (no {' or '.join(SYNTH_MARKERS)}); "
            "--overwrite replaces only an earlier synth output, so choose an empty or new directory"
        )
