"""Per-finding expert thresholds, calibrated on a run's validation split and saved in the run as data.

    leadrrg calibrate --run RUN [--split val]          # or: calibrate_run("runs/demo/lead")

The decoder reads an expert's p as "present" when p > its threshold (`inference.steps.decoding_context`). One
cut-off for every finding (`decode.expert_threshold`, 0.7) turns a p of 0.6 into a confident negative for a
finding whose expert rarely goes above 0.6; each finding gets its own operating point instead.

Two rules (`rule=`): `precision` (the default of the file: the lowest threshold at which the expert's calls are at
least 0.9 precise, the fewest omissions at a hallucination rate of at most 0.1) and `max_f1`. Decoding reads the
file only with `decode.thresholds=calibrated`: on a selection set both rules raised hallucination over the global
0.7 (docs/FAITHFULNESS.md), so the default decoder keeps the global threshold.

The max_f1 rule (`best_f1_threshold`), per finding, on the validation split's expert probabilities against its labels
(the targets the experts were trained on: `model.losses.expert_targets` under the run's label policy, so an
uncertain label counts as the policy says): the threshold t of the grid 0.05, 0.06, ..., 0.95 (the clip range)
whose decision p > t has the highest F1; ties go to the t nearest the fallback (`decode.expert_threshold`, or
0.5 when that is 0), then to the higher one. A finding with fewer than `MIN_POSITIVES` positives or
`MIN_NEGATIVES` negatives in the split gets no threshold of its own: it keeps `decode.expert_threshold`.

Why F1 and not Youden's J: a threshold trades omitted findings (false negatives) against stated findings the
image lacks (false positives). F1 of the finding counts the two alike and ignores the true negatives; Youden's J
(sensitivity + specificity - 1) prices a false positive at 1 / negatives, which for a rare finding (hundreds of
negatives, a dozen positives) makes false positives nearly free and pulls t down: fewer omissions bought with many
hallucinations. A grid and a fixed tie rule keep it deterministic; no split but validation is ever read (test
and shift_test are refused).

RUN/thresholds.json (written atomically):

    {"format": "leadrrg.thresholds/1", "calibrated_on": "val", "rule": "max_f1", "rule_text": "...",
     "range": [0.05, 0.95], "min_positives": 10, "min_negatives": 10, "fallback": 0.7, "studies": 200,
     "weights_sha256": "...",                      <- the weights they were calibrated for
     "thresholds": {"Edema": 0.42, ...},           <- calibrated findings only; the rest use the fallback
     "findings": {"Edema": {"threshold": 0.42, "n": 200, "positives": 35, "f1": 0.81,
                            "f1_at_fallback": 0.7}, "Fracture": {"threshold": null, "n": 200, "positives": 3,
                            "f1": null, "f1_at_fallback": 0.0, "reason": "3 positives (< 10)"}, ...}}

`leadrrg.load` reads it when `decode.thresholds=calibrated` (the default) into `decode.expert_thresholds`
(`with_run_thresholds`); a file calibrated for other weights is ignored with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from leadrrg.config import RunConfig, load_run_config
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.dataset import StudyDataset
from leadrrg.data.manifests import load_studies
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, read_json_object
from leadrrg.model.grounding import decoder_probs
from leadrrg.model.losses import expert_targets
from leadrrg.progress import Progress
from leadrrg.runs.files import (
    CONFIG_FILE,
    MODEL_FILE,
    THRESHOLDS_FILE,
    load_run,
    training_device,
    weights_checksum,
)

logger = logging.getLogger(__name__)

THRESHOLDS_FORMAT = "leadrrg.thresholds/1"
RULES = ("precision", "max_f1")  # the default first
MIN_PRECISION = 0.9  # rule `precision`: hallucination (1 - precision) at most 0.1 on the split
MIN_PREDICTED = 5  # ... judged on at least this many studies the expert calls present
GRID = tuple(round(0.01 * i, 2) for i in range(5, 96))  # 0.05 ... 0.95: the candidates and the clip range
MIN_POSITIVES = 10
MIN_NEGATIVES = 10
NEUTRAL = 0.5  # the tie anchor when decode.expert_threshold is 0 (the decoder reads soft p)
_ENOUGH = f"fewer than {MIN_POSITIVES} positives or {MIN_NEGATIVES} negatives: the fallback (decode.expert_threshold)"
RULE_TEXT = {
    "max_f1": f"per finding, the t in [{GRID[0]}, {GRID[-1]}] (step 0.01) maximising F1 of p > t on the split's "
    f"labels; ties: nearest the fallback, then higher; {_ENOUGH}",
    "precision": f"per finding, the lowest t in [{GRID[0]}, {GRID[-1]}] (step 0.01) at which p > t has precision "
    f">= {MIN_PRECISION} on the split's labels (at least {MIN_PREDICTED} studies called present): the fewest "
    f"omissions at a hallucination rate of at most {1 - MIN_PRECISION:.1f}; no such t: the fallback; {_ENOUGH}",
}


def f1_at(probs: torch.Tensor, positive: torch.Tensor, threshold: float) -> float:
    """F1 of the decision p > threshold: probs (N,), positive (N,) bool -> F1 (0 when nothing is right)."""
    predicted = probs > threshold
    tp = int((predicted & positive).sum())
    wrong = int((predicted ^ positive).sum())  # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if tp else 0.0


def best_f1_threshold(probs: torch.Tensor, positive: torch.Tensor, anchor: float) -> tuple[float, float]:
    """The grid threshold with the highest F1 of p > t -> (threshold, F1); ties: nearest `anchor`, then higher."""
    scores = [f1_at(probs, positive, t) for t in GRID]
    best = max(scores)
    tied = [t for t, score in zip(GRID, scores) if score >= best - 1e-12]
    return min(tied, key=lambda t: (abs(t - anchor), -t)), best


def precision_threshold(probs: torch.Tensor, positive: torch.Tensor) -> float | None:
    """The lowest grid t at which p > t has precision >= MIN_PRECISION over >= MIN_PREDICTED calls; None if none."""
    for t in GRID:
        predicted = probs > t
        called = int(predicted.sum())
        if called >= MIN_PREDICTED and int((predicted & positive).sum()) >= MIN_PRECISION * called:
            return t
    return None


def calibrate_thresholds(
    probs: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    label_policy: str,
    fallback: float,
    split: str = "val",
    rule: str = RULES[0],
) -> dict[str, Any]:
    """probs (N, K) of experts `names`, labels (N, K) 1/0/-1/NaN in the same order -> the thresholds file's
    content (see the module docstring), without `weights_sha256`. `rule`: one of RULES."""
    if rule not in RULES:
        raise LeadrrgError(f"calibration rule {rule!r} is unknown; expected one of: {', '.join(RULES)}")
    targets, weights = expert_targets(labels.float(), label_policy)  # (N, K) each
    anchor = fallback if fallback > 0 else NEUTRAL
    thresholds: dict[str, float] = {}
    findings: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        # the studies the expert was trained on (label policy `ignore` drops the uncertain ones)
        kept = weights[:, k] > 0
        p, positive = probs[kept, k].float(), targets[kept, k] > 0.5
        n, positives = int(kept.sum()), int(positive.sum())
        entry: dict[str, Any] = {"threshold": None, "n": n, "positives": positives, "f1": None}
        entry["f1_at_fallback"] = round(f1_at(p, positive, anchor), 4)
        if positives < MIN_POSITIVES or n - positives < MIN_NEGATIVES:
            if positives < MIN_POSITIVES:
                entry["reason"] = f"{positives} positives (< {MIN_POSITIVES})"
            else:
                entry["reason"] = f"{n - positives} negatives (< {MIN_NEGATIVES})"
        elif rule == "max_f1":
            threshold, f1 = best_f1_threshold(p, positive, anchor)
            entry.update(threshold=threshold, f1=round(f1, 4))
            thresholds[name] = threshold
        elif (threshold := precision_threshold(p, positive)) is not None:
            entry.update(threshold=threshold, f1=round(f1_at(p, positive, threshold), 4))
            thresholds[name] = threshold
        else:
            entry["reason"] = f"precision {MIN_PRECISION} is reached at no threshold"
        findings[name] = entry
    return {
        "format": THRESHOLDS_FORMAT,
        "calibrated_on": split,
        "rule": rule,
        "rule_text": RULE_TEXT[rule],
        "range": [GRID[0], GRID[-1]],
        "min_positives": MIN_POSITIVES,
        "min_negatives": MIN_NEGATIVES,
        "fallback": fallback,
        "studies": int(probs.shape[0]),
        "thresholds": thresholds,
        "findings": findings,
    }


def check_calibration_split(split: str) -> None:
    """Thresholds are chosen on validation data only: a test split (test, shift_test, ...) is refused."""
    if "test" in split.lower():
        raise LeadrrgError(
            f"split {split!r} is a test split; expected a validation split (e.g. val): thresholds chosen on "
            "test data would make every test score optimistic"
        )


@torch.inference_mode()
def expert_probabilities(
    model: torch.nn.Module, config: RunConfig, studies: list, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The experts' p (N, K) on `studies` (the vision encoder and experts only, no decoding) and the studies'
    labels (N, K) in the experts' order (NaN where unknown)."""
    dataset = StudyDataset(studies, config.model.vision, config.model.max_views, train=False)
    loader = DataLoader(
        dataset, batch_size=config.decode.batch_size, shuffle=False, num_workers=config.data.num_workers
    )
    columns = [OBSERVATIONS.index(name) for name in config.model.experts.names]
    device = next(model.parameters()).device
    probs, labels = [], []
    model.eval()
    with Progress(len(studies), "calibrate", enabled=progress) as bar:
        for batch in loader:
            study = model.encode_images(batch["images"].to(device), batch["view_mask"].to(device))
            p = decoder_probs(config.model.grounding, config.model.label_policy, study.expert_logits)
            probs.append(p.float().cpu())
            labels.append(batch["labels"][:, columns].float())
            bar.update(len(batch["images"]))
    return torch.cat(probs), torch.cat(labels)


def calibrate_run(
    run_dir: str | Path,
    split: str = "val",
    device: str | torch.device | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = False,
    rule: str = RULES[0],
) -> dict[str, Any]:
    """Calibrate a trained run's per-finding thresholds on `split` and write RUN/thresholds.json atomically;
    returns its content. `device`: default where the run trained. `overrides`: data.* settings (e.g.
    `data.root=DIR` when the data moved)."""
    check_calibration_split(split)
    run_dir = Path(run_dir)
    model, _, config = load_run(run_dir, device="cpu", overrides=list(overrides))
    if not config.model.injection.has_experts:
        raise LeadrrgError(
            f"run {run_dir} has no experts (model.injection.fusion=none); nothing to calibrate"
        )
    if not config.data.root:
        raise LeadrrgError(f"run {run_dir} has no data.root; expected data.root=DIR naming its data")
    model.to(device if device is not None else training_device(config))
    studies = [s for s in load_studies(config.data, split) if s.labels is not None]
    if not studies:
        raise LeadrrgError(
            f"split {split!r} of {config.data.root} has no studies with labels; expected a labelled validation split"
        )
    probs, labels = expert_probabilities(model, config, studies, progress)
    names = list(config.model.experts.names)
    content = calibrate_thresholds(
        probs, labels, names, config.model.label_policy, config.decode.expert_threshold, split, rule
    )
    content["weights_sha256"] = weights_checksum(run_dir / MODEL_FILE)
    atomic_write_text(run_dir / THRESHOLDS_FILE, json.dumps(content, indent=2) + "\n")
    return content


def read_thresholds(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/thresholds.json, checked (None when the run has none); a LeadrrgError naming the file if damaged."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.exists():
        return None
    expected = f"a {THRESHOLDS_FORMAT} file written by `leadrrg calibrate` (rerun it)"
    content = read_json_object(path, "thresholds file", expected)
    values = content.get("thresholds")
    if content.get("format") != THRESHOLDS_FORMAT or not isinstance(values, dict):
        raise LeadrrgError(f"thresholds file {path} is not {expected}")
    for name, value in values.items():
        good = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
        if name not in OBSERVATIONS or not good:
            raise LeadrrgError(
                f"thresholds file {path}: {name!r}: {value!r}; expected a CheXpert observation and a number in (0, 1)"
            )
    return content


def with_run_thresholds(config: RunConfig, run_dir: str | Path) -> RunConfig:
    """`config` with decode.expert_thresholds filled from RUN/thresholds.json when decode.thresholds=calibrated
    (thresholds given explicitly, `--set decode.expert_thresholds=...`, win); unchanged otherwise, or when the
    file is absent or was calibrated for other weights (a warning)."""
    decode = config.decode
    if decode.thresholds != "calibrated":
        return config
    content = read_thresholds(run_dir)
    if content is None:
        return config
    saved = content.get("weights_sha256")
    if saved != weights_checksum(Path(run_dir) / MODEL_FILE):
        logger.warning(
            "%s was calibrated for other weights; using decode.expert_threshold=%s for every finding "
            "(recalibrate with `leadrrg calibrate --run %s`)",
            Path(run_dir) / THRESHOLDS_FILE,
            decode.expert_threshold,
            run_dir,
        )
        return config
    merged = {**content["thresholds"], **decode.expert_thresholds}
    return dataclasses.replace(config, decode=dataclasses.replace(decode, expert_thresholds=merged))


def calibrate_after_training(
    run_dir: str | Path, device: torch.device | None = None
) -> dict[str, Any] | None:
    """`calibrate_run` on a run training has just written (skipped for a directory without weights or a model
    without experts); a run that cannot be calibrated (no labelled validation split) keeps
    decode.expert_threshold, with a warning, and the trained run stands."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).exists():
        return None
    if not load_run_config(run_dir / CONFIG_FILE).model.injection.has_experts:
        return None
    try:
        return calibrate_run(run_dir, "val", device=device)
    except LeadrrgError as exc:
        logger.warning(
            "%s not calibrated: decode.expert_threshold applies to every finding (%s)", run_dir, exc
        )
        return None
