"""SynthCXR: procedural frontal chest radiographs with known findings and matching reports.

A study is drawn in three independent streams derived from (seed, split, index): its findings
(`sample_findings`, from the co-occurrence prior of `SynthConfig` or, for `shift_test`, independently at
the same marginal prevalence), its report (`write_report`) and its image (`render_image`). `synthesize`
writes a data set directory:

    DIR/images/<study_id>/0.png   8-bit grayscale
    DIR/manifest.jsonl            id, split, images (relative to DIR), report, labels (14 ints), findings
    DIR/annotation.json           R2Gen layout: {"train": [{id, report, image_path, split}], ...}
    DIR/synth_config.json         the prior the studies were drawn from

Everything is written into a temporary sibling directory that is renamed to DIR only when complete.
numpy and Pillow only (no torch).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leadrrg.constants import NUM_OBSERVATIONS, OBSERVATIONS
from leadrrg.data.synth_render import render_image
from leadrrg.data.synth_reports import write_report
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_directory

__all__ = [
    "SPLITS",
    "Finding",
    "Findings",
    "Syndrome",
    "SynthConfig",
    "findings_from_labels",
    "make_study",
    "marginal_prevalence",
    "render_image",
    "sample_findings",
    "study_id",
    "synthesize",
    "write_contact_sheet",
    "write_report",
]

SPLITS: tuple[str, ...] = ("train", "val", "test", "shift_test")
FINDING_NAMES: tuple[str, ...] = OBSERVATIONS[1:]  # everything but No Finding
SEVERITIES = ("mild", "moderate", "large")
SIDES = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower")
DEVICES = (
    "endotracheal tube",
    "nasogastric tube",
    "central venous catheter",
    "picc",
    "pacemaker",
)
# Sternotomy wires are drawn and described (synth_render / synth_reports) but not sampled: like the CheXpert
# labeler and the IU X-Ray annotations, leadrrg's labeler does not count them as a support device.

# Which sides and zones each observation can take (the first zone is the usual one).
_ALLOWED_SIDES: dict[str, tuple[str, ...]] = {
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
_ALLOWED_ZONES: dict[str, tuple[str, ...]] = {
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
# The prior


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LeadrrgError(
                f"unknown synth config keys {sorted(unknown)}; expected: {', '.join(sorted(known))}"
            )
        return cls(**data)


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
    config = SynthConfig.from_dict(json.loads(config_json))
    present, _ = _sample_presence(np.random.default_rng(20260204), config, 200_000)
    return tuple(present.mean(axis=0).tolist())


def marginal_prevalence(config: SynthConfig) -> dict[str, float]:
    """Marginal prevalence of each finding under the prior (Monte Carlo, fixed seed, 200k draws)."""
    return dict(zip(FINDING_NAMES, _marginals_cached(config.to_json())))


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
    sides = _ALLOWED_SIDES.get(name, SIDES)
    if side not in sides:
        side = _pick(rng, sides, [0.4, 0.4, 0.2][: len(sides)] if len(sides) == 3 else None)
    zones = _ALLOWED_ZONES.get(name, ("lower",))
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


# --------------------------------------------------------------------------------------------------
# Studies and data sets


def study_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def _study_rngs(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """Independent streams (findings, report, image) for one study, from (seed, split, index) only."""
    sequence = np.random.SeedSequence([seed, SPLITS.index(split), index])
    return [np.random.default_rng(child) for child in sequence.spawn(3)]


def make_study(
    split: str, index: int, size: int, seed: int, config: SynthConfig
) -> tuple[dict[str, Any], np.ndarray]:
    """One study's manifest record (without paths) and its image."""
    rng_findings, rng_report, rng_image = _study_rngs(seed, split, index)
    findings = sample_findings(rng_findings, config, independent=split == "shift_test")
    report = write_report(findings, rng_report, config)
    image = render_image(findings, size, rng_image)
    record = {
        "id": study_id(split, index),
        "split": split,
        "report": report,
        "labels": findings.labels().tolist(),
        "findings": findings.to_dict(),
    }
    return record, image


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _work(task: tuple[str, int, int, int, str, str]) -> dict[str, Any]:
    """Worker: render one study and write its PNG under `root`; return its manifest record."""
    split, index, size, seed, config_json, root = task
    config = _config_for(config_json)
    record, image = make_study(split, index, size, seed, config)
    relative = f"images/{record['id']}/0.png"
    path = Path(root) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(image))
    return {
        "id": record["id"],
        "split": split,
        "images": [relative],
        **{k: record[k] for k in ("report", "labels", "findings")},
    }


@functools.lru_cache(maxsize=4)
def _config_for(config_json: str) -> SynthConfig:
    return SynthConfig.from_dict(json.loads(config_json))


def _check_counts(counts: dict[str, int]) -> None:
    for split, n in counts.items():
        if split not in SPLITS:
            raise LeadrrgError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise LeadrrgError(f"count for split {split!r} is {n!r}; expected a non-negative integer")
    if sum(counts.values()) == 0:
        raise LeadrrgError("all split counts are 0; expected at least one study to synthesise")


def parallel_map(work: Callable[[Any], Any], tasks: list[tuple], workers: int) -> Iterator[Any]:
    """`work` over `tasks` in order, in `workers` spawned processes (`work` must be a module-level function)."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(work, tasks)
        return
    import multiprocessing

    # spawn: safe even when the caller has torch (and its threads) loaded.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8))))


def synthesize(
    out_dir: str | Path,
    counts: dict[str, int],
    size: int = 128,
    seed: int = 0,
    workers: int = 1,
    config: SynthConfig | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a SynthCXR data set to `out_dir` (see the module docstring); return its path.

    The same (counts, size, seed, config) give byte-identical files for any number of workers."""
    out = Path(out_dir)
    _check_counts(counts)
    if size < 32 or size > 2048:
        raise LeadrrgError(f"image size {size} is out of range; expected 32..2048 pixels")
    if workers < 1:
        raise LeadrrgError(f"workers is {workers}; expected at least 1")
    if out.exists() and not out.is_dir():
        raise LeadrrgError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LeadrrgError(f"output directory {out} exists and is not empty; pass --overwrite to replace it")
    config = config or SynthConfig()
    config_json = config.to_json()
    with atomic_directory(out) as tmp:
        tasks = [
            (split, i, size, seed, config_json, str(tmp))
            for split in SPLITS
            for i in range(counts.get(split, 0))
        ]
        records = parallel_map(_work, tasks, workers)
        if progress:
            from tqdm import tqdm

            records = tqdm(records, total=len(tasks), desc="synth", unit="study", file=sys.stderr)
        with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            annotation: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
            for record in records:
                manifest.write(json.dumps(record) + "\n")
                annotation[record["split"]].append(
                    {
                        "id": record["id"],
                        "report": record["report"],
                        "image_path": record["images"],
                        "split": record["split"],
                    }
                )
        (tmp / "annotation.json").write_text(json.dumps(annotation) + "\n", encoding="utf-8")
        (tmp / "synth_config.json").write_text(config_json + "\n", encoding="utf-8")
    return out


def read_manifest(data_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(data_dir) / "manifest.jsonl"
    if not path.is_file():
        raise LeadrrgError(f"{path} does not exist; expected a SynthCXR directory written by `leadrrg synth`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Preview


def write_contact_sheet(data_dir: str | Path, path: str | Path, count: int = 24, columns: int = 6) -> Path:
    """A grid of studies from `data_dir` with their positive findings as captions (PNG).

    Studies are picked to cover as many different findings as possible, then in order."""
    from PIL import Image, ImageDraw, ImageFont

    data_dir = Path(data_dir)
    records = read_manifest(data_dir)
    chosen: list[dict[str, Any]] = []
    covered: set[str] = set()
    for record in records:  # greedy coverage of the observations
        names = {OBSERVATIONS[i] for i, v in enumerate(record["labels"]) if v}
        if names - covered and len(chosen) < count:
            chosen.append(record)
            covered |= names
    for record in records:
        if len(chosen) >= count:
            break
        if record not in chosen:
            chosen.append(record)
    font = ImageFont.load_default()
    tile = 192
    caption_h = 40
    rows = (len(chosen) + columns - 1) // columns
    sheet = Image.new("L", (columns * tile, rows * (tile + caption_h)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, record in enumerate(chosen):
        image = Image.open(data_dir / record["images"][0]).convert("L").resize((tile, tile), Image.BILINEAR)
        x, y = (k % columns) * tile, (k // columns) * (tile + caption_h)
        sheet.paste(image, (x, y))
        names = [OBSERVATIONS[i] for i, v in enumerate(record["labels"]) if v]
        words = _caption(record, names)
        lines, line = [], ""
        for word in words.split(" "):
            if len(line) + len(word) + 1 > 34:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for j, text in enumerate(lines[:3]):
            draw.text((x + 3, y + tile + 1 + 12 * j), text, fill=0, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _caption(record: dict[str, Any], names: list[str]) -> str:
    attrs = record.get("findings", {})
    parts = []
    for name in names:
        a = attrs.get(name, {})
        short = {
            "Enlarged Cardiomediastinum": "EnlCM",
            "Support Devices": "Devices",
            "Pleural Effusion": "Effusion",
        }.get(name, name)
        if a and name not in ("Support Devices",):
            side = {"right": "R", "left": "L", "bilateral": "B"}[a["side"]]
            short += (
                f"({a['severity'][:3]},{side})"
                if a["side"] != "bilateral"
                or name in ("Pleural Effusion", "Atelectasis", "Lung Opacity", "Pleural Other")
                else f"({a['severity'][:3]})"
            )
        parts.append(short)
    return f"{record['id']}: " + ", ".join(parts)
