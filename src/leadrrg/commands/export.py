"""`leadrrg export RUN --out DIR`: a trained run as a model to share: weights and config only, world-readable.

    DIR/
      config.json          the run's config (base-model paths as trained: override them with --set at load)
      model.safetensors    the trained weights (with a LoRA base: adapters and new modules only)
      tokenizer/
      provenance.json      versions, command, data manifest hash, and the base model's fingerprint
      metrics.json         when the run was evaluated
      README.md            the model card: Hugging Face hub metadata (YAML front matter: licence, tags, data
                           set, metrics, library_name), intended use (research only), limitations, data, and
                           one metrics table (a column per split, each definition given once)
      leadrrg-export.json  the marker that says DIR is an export (what a later export may replace)

No optimizer state, trainer state, logs or TensorBoard events. The directory is written as a whole (complete
or absent), files 0644 and folders 0755 whatever the umask. DIR may be new, an empty folder or an earlier
export (its marker, or for exports made before the marker: only export files and this model card), which is
replaced; anything else is refused before any work, as is a DIR that is the run, holds it or lies inside it,
so an export never deletes what the user had. It loads with `leadrrg.load(DIR)`; a LoRA export
needs the same base model, found by its fingerprint (`--set model.decoder.pretrained_path=DIR` where it lies).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from leadrrg.commands import check_run_dir
from leadrrg.errors import LeadrrgError
from leadrrg.io import (
    atomic_directory,
    atomic_write_text,
    check_apart,
    check_output_dir,
    check_writable,
    output_error,
    read_json_object,
)

COPIED = ("config.json", "model.safetensors", "provenance.json", "metrics.json")
MARKER = "leadrrg-export.json"  # written in every export: what tells an earlier export from a user's folder
CARD_TITLE = ": a leadrrg chest X-ray report generator"  # the model card's first line ends with it
EXPORT_NAMES = {*COPIED, "tokenizer", "README.md", MARKER}  # everything an export holds
FILE_MODE, DIR_MODE = 0o644, 0o755

# Metric families of metrics.json and what they measure (leadrrg.metrics).
DEFINITIONS: dict[str, str] = {
    "bleu_": "BLEU-n (pycocoevalcap): modified n-gram precision with brevity penalty, corpus level",
    "meteor": "METEOR 1.5 (pycocoevalcap, Java): unigram matches with stems and synonyms, F-mean with a "
    "fragmentation penalty",
    "rouge_l": "ROUGE-L (pycocoevalcap): F-measure of the longest common subsequence",
    "cider": "CIDEr-D (pycocoevalcap): TF-IDF weighted n-gram cosine similarity to the reference",
    "ce14_": "clinical efficacy over the 14 CheXpert observations: precision / recall / F1 of positive findings "
    "labelled by leadrrg's rule-based labeler in the generated vs the reference report (micro, macro, example)",
    "ce5_": "clinical efficacy over the common five (atelectasis, cardiomegaly, consolidation, edema, pleural "
    "effusion), as ce14_",
    "hallucination_rate": "share of positive findings asserted by generated reports that the reference lacks",
    "reports_with_hallucination": "share of generated reports with at least one hallucinated finding",
    "omission_rate": "share of the reference's positive findings that the generated report does not assert",
    "gt_": "the same score against the data set's ground-truth labels instead of the labelled reference",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="trained run directory (written by leadrrg train)")
    parser.add_argument(
        "--out",
        required=True,
        help="export directory to write: new, empty, or an earlier export (replaced as a whole)",
    )


def run(args: argparse.Namespace) -> int:
    run_dir, out = Path(args.run), Path(args.out)
    check_run_dir(run_dir)
    export_run(run_dir, out)
    print(
        f"exported {run_dir} to {out} (weights, config, tokenizer, provenance, model card; no optimizer state)"
    )
    return 0


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the export of `run_dir` to `out` (see the module docstring); the weights are verified first."""
    # torch (safetensors): imported here, not by `leadrrg --help`
    from leadrrg.runs.files import MODEL_FILE, TOKENIZER_DIR, read_safetensors, tensors_sha256

    run_dir, out = Path(run_dir), Path(out)
    check_export_target(run_dir, out)
    check_writable(out, "export directory")  # read-only or forbidden: said before any work
    tensors, metadata = read_safetensors(run_dir / MODEL_FILE)
    if metadata.get("tensors_sha256") not in (None, tensors_sha256(tensors)):
        raise LeadrrgError(
            f"{run_dir / MODEL_FILE} is damaged (its checksum does not match); nothing exported"
        )
    try:
        with atomic_directory(out, suffix=".export") as tmp:
            for name in COPIED:
                if (run_dir / name).is_file():
                    shutil.copyfile(run_dir / name, tmp / name)  # a copy, never a hard link into the run
            shutil.copytree(run_dir / TOKENIZER_DIR, tmp / TOKENIZER_DIR, copy_function=shutil.copyfile)
            atomic_write_text(tmp / "README.md", model_card(run_dir))
            atomic_write_text(tmp / MARKER, json.dumps({"leadrrg_export": 1, "run": run_dir.name}) + "\n")
            world_readable(tmp)
    except (OSError, shutil.Error) as exc:  # a full disk: nothing half-written is left (atomic_directory)
        if isinstance(exc, shutil.Error):
            raise LeadrrgError(f"cannot write export directory {out} ({exc}); nothing exported") from None
        raise output_error(exc, out, "export directory") from None
    return out


def check_export_target(run_dir: Path, out: Path, what: str = "--out") -> None:
    """Refuse (LeadrrgError) an export directory whose replacement would delete what the user had: the run
    itself, a folder that holds the run or lies inside it, or an existing folder that is not empty and not an
    earlier export (`is_export`), or an earlier export holding files an export does not write."""
    check_output_dir(out, what)
    check_apart(out, run_dir, what, "the run directory")
    if not out.is_dir():
        return
    names = sorted(entry.name for entry in out.iterdir())
    if not names:
        return
    if not is_export(out):
        raise LeadrrgError(
            f"{what} {out} is a folder that is not empty ({len(names)} entries, e.g. {names[0]!r}) and not a "
            f"leadrrg export (no {MARKER}); an export replaces its folder as a whole: expected a new or empty "
            "folder, or an earlier export to replace"
        )
    extra = [name for name in names if name not in EXPORT_NAMES]
    if extra:
        raise LeadrrgError(
            f"{what} {out} is an earlier export that also holds {', '.join(map(repr, extra[:3]))}, which an "
            "export does not write; an export replaces its folder as a whole: move them out, or export to a "
            "new folder"
        )


def is_export(folder: Path) -> bool:
    """`folder` was written by `leadrrg export`: it holds the marker, or (an export made before the marker)
    only export files, and a model card whose title says so."""
    if (folder / MARKER).is_file():
        return True
    names = {entry.name for entry in folder.iterdir()}
    if not names <= EXPORT_NAMES or not (folder / "README.md").is_file():
        return False
    try:
        with open(folder / "README.md", encoding="utf-8") as handle:  # the title: after any front matter
            title = next((line for _, line in zip(range(40), handle) if line.startswith("# ")), "")
    except (OSError, UnicodeDecodeError):
        return False
    return title.rstrip("\n").endswith(CARD_TITLE)


def world_readable(root: Path) -> None:
    root.chmod(DIR_MODE)
    for directory, folders, files in os.walk(root):
        for name in folders:
            Path(directory, name).chmod(DIR_MODE)
        for name in files:
            Path(directory, name).chmod(FILE_MODE)


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object a run keeps in `path` ({} when the file is absent)."""
    if not path.is_file():
        return {}
    return read_json_object(path, "run file", "the JSON object that leadrrg writes")


def family(metric: str) -> str | None:
    """The DEFINITIONS key of `metric` (its family), or None for a metric the card does not show."""
    for prefix in DEFINITIONS:
        if metric == prefix or (prefix.endswith("_") and metric.startswith(prefix)):
            return prefix
    return None


def define(metric: str) -> str | None:
    key = family(metric)
    return None if key is None else DEFINITIONS[key]


# What the Hugging Face hub header says of the data a run was trained on: (dataset name, licence of the weights).
DATA_FACTS: dict[str, tuple[str, str]] = {
    "synth": ("synthcxr", "apache-2.0"),  # synthetic images and reports: the package's licence
    "iu_xray": ("iu-xray", "cc-by-nc-nd-4.0"),  # Open-i's licence
    "mimic_cxr": ("mimic-cxr", "other"),  # PhysioNet Credentialed Health Data License
    "chexpert_plus": ("chexpert-plus", "other"),  # Stanford AIMI research use agreement
}
HUB_METRICS = {"bleu_": "bleu", "meteor": "meteor", "rouge_l": "rouge", "cider": "cider", "ce14_": "f1"}


def front_matter(config: dict[str, Any], metrics: dict[str, dict]) -> list[str]:
    """The hub metadata header (YAML front matter): licence, library, tags, data set and metrics."""
    data_format = config.get("data", {}).get("format")
    dataset, license_id = DATA_FACTS.get(data_format, (data_format or "unknown", "other"))
    names = {name for values in metrics.values() for name in values}
    hub = sorted({hub for prefix, hub in HUB_METRICS.items() if any(family(n) == prefix for n in names)})
    lines = ["---", f"license: {license_id}"]
    if license_id == "other":
        lines.append(f"license_name: {dataset}-data-use-terms")
    lines += ["library_name: leadrrg", "pipeline_tag: image-to-text", "tags:"]
    lines += [f"  - {tag}" for tag in ("leadrrg", "radiology-report-generation", "chest-x-ray", "medical")]
    lines += ["datasets:", f"  - {dataset}"]
    lines += ["metrics:", *(f"  - {name}" for name in hub)] if hub else []
    return [*lines, "---", ""]


def limitations(config: dict[str, Any]) -> list[str]:
    """What the model does not do, said before anyone relies on it."""
    data_format = config.get("data", {}).get("format")
    lines = ["## Limitations", ""]
    if data_format == "synth":
        lines.append(
            "- Trained and evaluated on SynthCXR, synthetic images and template reports: its scores say nothing "
            "about real radiographs, and it must be retrained on real data before any use on them."
        )
    lines += [
        "- Side (left / right), size and location words are not grounded in the image: check them against it.",
        "- The report follows the experts' probabilities: a finding the experts miss is usually absent from the "
        "report, and one they over-call is stated; the gates and expert shares shown by `leadrrg explain` are "
        "not causal explanations.",
        "- The clinical-efficacy and hallucination scores come from leadrrg's rule-based labeler, not from "
        "CheXbert or a radiologist: compare them only with scores computed the same way.",
        "- English reports of one data set's style; other institutions, views or populations are untested.",
        "",
    ]
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) > 1):
        return str(int(value))  # a count
    return f"{value:.4f}"


def metrics_section(metrics: dict[str, dict]) -> list[str]:
    """One table, a column per evaluated split, each metric family's definition given once (on its first row)."""
    lines = ["## Metrics", ""]
    if not metrics:
        return [*lines, "The run was not evaluated (no metrics.json).", ""]
    rows: dict[str, None] = {}
    for values in metrics.values():
        for name, value in values.items():
            if family(name) is not None and (isinstance(value, (int, float)) or value is None):
                rows[name] = None
    splits = list(metrics)
    lines += [f"| metric | {' | '.join(splits)} | definition |", "|---" * (len(splits) + 2) + "|"]
    defined: set[str] = set()
    for name in rows:
        key = family(name)
        text = "" if key in defined else DEFINITIONS[key]
        defined.add(key)
        cells = " | ".join(_shown(metrics[split].get(name)) for split in splits)
        lines.append(f"| `{name}` | {cells} | {text} |".replace("|  |", "| |"))
    return [*lines, ""]


def own_metrics(metrics: dict[str, dict], checksum: str | None) -> tuple[dict[str, dict], list[str]]:
    """The splits' metrics whose predictions were made with these weights (or do not say), and the splits left
    out because their predictions name other weights (`meta.predictions_weights_sha256`)."""
    kept, foreign = {}, []
    for split, values in metrics.items():
        made_with = (values.get("meta") or {}).get("predictions_weights_sha256") or []
        if checksum and made_with and checksum not in made_with:
            foreign.append(split)
        else:
            kept[split] = values
    return kept, foreign


def model_card(run_dir: Path) -> str:
    """The export's README.md: hub metadata, what the model is, what it is for and not, its data, its base and
    its metrics."""
    config = _read_json(run_dir / "config.json")
    provenance = _read_json(run_dir / "provenance.json")
    metrics = _read_json(run_dir / "metrics.json")
    if "meta" in metrics:  # one evaluation (leadrrg evaluate --out RUN/metrics.json)
        metrics = {metrics["meta"].get("split") or "evaluation": metrics}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, dict) and k != "provenance"}
    from leadrrg.runs.files import MODEL_FILE, weights_checksum  # torch: not for `leadrrg --help`

    weights = run_dir / MODEL_FILE
    metrics, foreign = own_metrics(metrics, weights_checksum(weights) if weights.is_file() else None)
    model, data = config.get("model", {}), config.get("data", {})
    decoder = model.get("decoder", {})
    lines = [
        *front_matter(config, metrics),
        f"# {run_dir.name}{CARD_TITLE}",
        "",
        "## Intended use",
        "",
        "**Research only.** This model writes draft radiology reports (the findings section) from chest X-ray "
        "images, for research on report generation and its faithfulness. It is not a medical device, has not "
        "been validated clinically, and must not be used for diagnosis or patient care.",
        "",
        *limitations(config),
        "## Model",
        "",
        f"- preset `{config.get('preset')}`, fusion `{model.get('injection', {}).get('fusion')}` (LEAD: expert "
        "features injected into every decoder layer through a learned gate)",
        f"- vision encoder `{model.get('vision', {}).get('name')}`, decoder backbone `{decoder.get('backbone')}`"
        + (
            f", LoRA rank {decoder.get('lora_r')}"
            if decoder.get("pretrained_path")
            else ", trained from scratch"
        ),
        '- load it with `leadrrg.load("DIR")` or `leadrrg generate --run-dir DIR ...`',
    ]
    bases = provenance.get("base_models") or {}
    if bases:
        lines += ["", "## Base model", ""]
        lines += [
            f"- `{key}`: SHA-256 `{entry.get('sha256')}` over {', '.join(entry.get('files', []))} (trained from "
            f"`{entry.get('path')}`); give its local copy with `--set {key}.pretrained_path=DIR` (checked at load)"
            for key, entry in bases.items()
        ]
    manifest = provenance.get("data_manifest") or {}
    lines += [
        "",
        "## Data",
        "",
        f"- format `{data.get('format')}`, section `{data.get('section')}`, cleaning `{data.get('clean')}`",
        f"- manifest SHA-256 `{manifest.get('sha256')}`" if manifest else "- manifest hash: not recorded",
    ]
    if provenance.get("versions"):
        versions = ", ".join(f"{k} {v}" for k, v in provenance["versions"].items() if v)
        lines += ["", "## Provenance", "", f"- {versions}", f"- git commit `{provenance.get('git_commit')}`"]
    lines += ["", *metrics_section(metrics)]
    if foreign:
        lines += [
            f"Left out: the metrics of {', '.join(foreign)}, computed on predictions another model's weights made.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
