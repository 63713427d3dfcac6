"""Where the weights of the model-based metrics live: one local directory, set once, never a download.

The directory is, in this order: the ``--metrics-dir`` flag, ``$LEADRRG_METRICS_DIR``, or the one that
``leadrrg metrics setup DIR`` recorded in ``$XDG_CONFIG_HOME/leadrrg/metrics.json`` (default
``~/.config/leadrrg``). Inside it each metric reads fixed folders (`FOLDERS`); a folder that is missing or
incomplete gives a reason that names the files, where they come from and the folder to put them in, and the
metric is reported as missing with that reason (never a guess).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadrrg.errors import LeadrrgError

METRICS_DIR_ENV = "LEADRRG_METRICS_DIR"
SETTINGS_NAME = "metrics.json"
INSTALL_HINT = 'pip install "leadrrg[metrics]"'


@dataclass(frozen=True)
class Folder:
    """One model folder under the metrics directory."""

    path: str  # relative to the metrics directory
    files: tuple[str, ...]  # each must exist
    any_of: tuple[str, ...]  # at least one must exist (weights in one of several formats)
    source: str  # where the files come from

    def describe(self) -> str:
        wanted = list(self.files) + ([" or ".join(self.any_of)] if self.any_of else [])
        return f"{', '.join(wanted)} from {self.source}"


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
FOLDERS: dict[str, Folder] = {
    "bertscore": Folder(
        "bertscore/distilroberta-base",
        ("config.json", "vocab.json", "merges.txt"),
        HF_WEIGHTS,
        "https://huggingface.co/distilbert/distilroberta-base (the model ReXrank's BERTScore uses)",
    ),
    "chexbert": Folder(
        "chexbert",
        ("chexbert.pth",),
        (),
        "the CheXbert checkpoint linked from https://github.com/stanfordmlgroup/CheXbert (README, 'chexbert.pth')",
    ),
    "chexbert_bert": Folder(
        "chexbert/bert-base-uncased",
        ("config.json", "vocab.txt"),
        (),
        "https://huggingface.co/google-bert/bert-base-uncased",
    ),
    "radgraph": Folder(
        "radgraph/radgraph",
        ("config.json", "weights.th", "vocabulary/"),
        (),
        "radgraph.tar.gz of https://huggingface.co/StanfordAIMI/RRG_scorers, extracted in that folder",
    ),
    "ratescore_ner": Folder(
        "ratescore/RaTE-NER-Deberta",
        ("config.json",),
        HF_WEIGHTS,
        "https://huggingface.co/Angelakeke/RaTE-NER-Deberta (with its tokenizer files)",
    ),
    "ratescore_encoder": Folder(
        "ratescore/BioLORD-2023-C",
        ("config.json",),
        HF_WEIGHTS,
        "https://huggingface.co/FremyCompany/BioLORD-2023-C (with its tokenizer files)",
    ),
}


def settings_file() -> Path:
    """Where `leadrrg metrics setup` records the metrics directory."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "leadrrg" / SETTINGS_NAME


def record_metrics_dir(directory: str | Path) -> Path:
    """Record `directory` (made absolute; it must exist) as the metrics directory; returns the settings file."""
    from leadrrg.io import atomic_write_text

    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise LeadrrgError(
            f"metrics directory {directory} does not exist; expected a folder holding the model folders"
        )
    target = settings_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps({"metrics_dir": str(path)}, indent=2) + "\n")
    return target


def metrics_dir(explicit: str | Path | None = None) -> tuple[Path | None, str]:
    """(directory or None, where it came from): `explicit`, else $LEADRRG_METRICS_DIR, else the recorded one."""
    if explicit is not None:
        return Path(explicit).expanduser(), "--metrics-dir"
    if os.environ.get(METRICS_DIR_ENV):
        return Path(os.environ[METRICS_DIR_ENV]).expanduser(), f"${METRICS_DIR_ENV}"
    target = settings_file()
    if not target.is_file():
        return None, "not set"
    try:
        recorded = json.loads(target.read_text(encoding="utf-8"))["metrics_dir"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LeadrrgError(
            f"{target}: expected {{'metrics_dir': PATH}} as written by `leadrrg metrics setup DIR` ({exc})"
        ) from None
    return Path(recorded), str(target)


def _absent(folder: Path, spec: Folder) -> list[str]:
    absent = [name for name in spec.files if not (folder / name.rstrip("/")).exists()]
    if spec.any_of and not any((folder / name).is_file() for name in spec.any_of):
        absent.append(" or ".join(spec.any_of))
    return absent


def folder_reason(root: Path | None, key: str) -> str | None:
    """None when the folder `key` of `FOLDERS` is complete under `root`, else what to put where."""
    spec = FOLDERS[key]
    if root is None:
        return (
            f"no metrics directory: run `leadrrg metrics setup DIR` (or set ${METRICS_DIR_ENV}=DIR), "
            f"then put {spec.describe()} in DIR/{spec.path}/"
        )
    folder = root / spec.path
    absent = _absent(folder, spec)
    if not absent:
        return None
    if not root.is_dir():
        return f"metrics directory {root} does not exist; put {spec.describe()} in {folder}/"
    return f"{folder}/ lacks {', '.join(absent)}; put {spec.describe()} there"


def model_folder(root: Path | None, key: str) -> Path:
    """The complete folder `key` under `root`; LeadrrgError saying what to put where otherwise."""
    reason = folder_reason(root, key)
    if reason is not None:
        raise LeadrrgError(reason)
    assert root is not None
    return root / FOLDERS[key].path


def package_reason(module: str, package: str) -> str | None:
    """None when `module` imports, else the install line for `package` (in the `metrics` extra)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"needs the package {package} ({INSTALL_HINT}; import {module} failed: {exc})"
    return None


class PerStudyMean:
    """Bootstrap statistics (`metrics.bootstrap.StudyStatistics`) of metrics that are means of per-study values."""

    def __init__(self, values: dict[str, np.ndarray]):
        self.values = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        total = weights.sum(axis=1)
        return {name: weights @ v / total for name, v in self.values.items()}
