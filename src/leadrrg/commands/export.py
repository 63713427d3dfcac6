"""`leadrrg export RUN --out DIR`: a trained run as a model to share: weights and config only, world-readable.

    DIR/
      config.json          the run's config (base-model paths as trained: override them with --set at load)
      model.safetensors    the trained weights (with a LoRA base: adapters and new modules only)
      tokenizer/
      provenance.json      versions, command, data manifest hash, and the base model's fingerprint
      metrics.json         when the run was evaluated
      README.md            the model card: intended use (research only), data, metrics and their definitions
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
        with open(folder / "README.md", encoding="utf-8") as handle:
            return handle.readline().rstrip("\n").endswith(CARD_TITLE)
    except (OSError, UnicodeDecodeError):
        return False


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


def define(metric: str) -> str | None:
    for prefix, text in DEFINITIONS.items():
        if metric == prefix or (prefix.endswith("_") and metric.startswith(prefix)):
            return text
    return None


def model_card(run_dir: Path) -> str:
    """The export's README.md: what the model is, what it is for, its data, its base and its metrics."""
    config = _read_json(run_dir / "config.json")
    provenance = _read_json(run_dir / "provenance.json")
    metrics = _read_json(run_dir / "metrics.json")
    model, data = config.get("model", {}), config.get("data", {})
    decoder = model.get("decoder", {})
    lines = [
        f"# {run_dir.name}{CARD_TITLE}",
        "",
        "## Intended use",
        "",
        "**Research only.** This model writes draft radiology reports (the findings section) from chest X-ray "
        "images, for research on report generation and its faithfulness. It is not a medical device, has not "
        "been validated clinically, and must not be used for diagnosis or patient care.",
        "",
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
    lines += ["", "## Metrics", ""]
    if "meta" in metrics:  # one evaluation (leadrrg evaluate --out RUN/metrics.json)
        metrics = {metrics["meta"].get("split") or "evaluation": metrics}
    splits = {
        split: values
        for split, values in metrics.items()
        if isinstance(values, dict) and split != "provenance"
    }
    if not splits:
        lines.append("The run was not evaluated (no metrics.json).")
    for split, values in splits.items():
        lines += [f"### {split}", "", "| metric | value | definition |", "|---|---|---|"]
        for name, value in values.items():
            text = define(name)
            if text is not None and (isinstance(value, (int, float)) or value is None):
                shown = "missing" if value is None else f"{value:.4f}"
                lines.append(f"| `{name}` | {shown} | {text} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
