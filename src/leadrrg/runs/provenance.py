"""What made a run: `RUN/provenance.json`, written once when training starts, and the base-model check at load.

    {"versions": {"leadrrg", "torch", "transformers", "peft", "python"}, "git_commit": "..." | null,
     "command": [argv...], "device": "cpu" | "cuda:0 (NVIDIA H200)", "world_size": 1, "created": "...Z",
     "data_manifest": {"format", "root", "files": {name: sha256}, "sha256"},
     "base_models": {"model.decoder": {"path", "sha256", "files"}, ...}}

A base model's fingerprint is a SHA-256 over its weight files (name and SHA-256 of every `*.safetensors` /
`*.bin` file of the pretrained directory, in name order). LoRA adapters are only meaningful on the base they
were trained on: loading a run recomputes the fingerprint of the (possibly overridden) `pretrained_path` and
refuses a mismatch, naming both. Runs without provenance.json (older runs) load unchecked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from leadrrg import __version__
from leadrrg.data.readers.chexpert_plus import CSV_GLOB, LABEL_DIRS
from leadrrg.data.readers.jsonl import MANIFEST_NAME
from leadrrg.data.readers.mimic_cxr import LABEL_NAMES
from leadrrg.data.readers.r2gen import ANNOTATION_NAME
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, read_json_object, sha256_file

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# Config sections whose `pretrained_path` is a base model (fingerprinted when set).
BASE_MODEL_KEYS = ("model.decoder", "model.vision")
# `--set` keys a command that loads a trained run accepts for a base model that has moved.
BASE_PATH_OVERRIDES = tuple(f"{key}.pretrained_path=" for key in BASE_MODEL_KEYS)
_FINGERPRINTS: dict[tuple, dict[str, Any]] = {}  # (path, (name, size, mtime)...) -> fingerprint, per process


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "leadrrg": __version__,
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "peft": package_version("peft"),
        "python": sys.version.split()[0],
    }


def git_commit() -> str | None:
    """The commit of the leadrrg source tree when it is a git checkout (an editable install), else None."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def describe_device(preference: str = "auto") -> str:
    """The training device as a person reads it: cpu, or cuda:N with the GPU's name."""
    import torch  # here, not at the top: commands import this module, and `leadrrg --help` needs no torch

    if preference == "cpu" or not torch.cuda.is_available():
        return "cpu"
    index = (
        int(os.environ.get("LOCAL_RANK", "0"))
        if preference in ("auto", "cuda")
        else torch.device(preference).index
    )
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def data_manifest(data) -> dict[str, Any]:
    """SHA-256 of the data root's manifest files (the ones `leadrrg.data.manifests` reads), one per file and
    one over all; images are not hashed."""
    root = Path(data.root) if data.root else None
    files: dict[str, str] = {}
    if root is not None and root.is_dir():
        candidates = [root / MANIFEST_NAME, root / ANNOTATION_NAME, *(root / name for name in LABEL_NAMES)]
        if data.annotation_file:
            candidates.append(root / data.annotation_file)
        candidates += sorted(root.glob(CSV_GLOB))
        candidates += [path for folder in LABEL_DIRS for path in sorted((root / folder).glob("*.json"))]
        if data.label_file:
            label = Path(data.label_file)
            candidates.append(label if label.is_absolute() else root / label)
        for path in candidates:
            if path.is_file():
                files[str(path.relative_to(root)) if path.is_relative_to(root) else str(path)] = sha256_file(
                    path
                )
    combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest() if files else None
    return {"format": data.format, "root": data.root, "files": files, "sha256": combined}


def base_model_fingerprint(path: str | Path) -> dict[str, Any]:
    """{"path", "sha256", "files"} of a pretrained model directory (sha256 None when it has no weight files)."""
    path = Path(path).expanduser().resolve()
    weights = sorted({p for pattern in WEIGHT_PATTERNS for p in path.glob(pattern) if p.is_file()})
    key = (str(path), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights))
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for weight in weights:
            digest.update(f"{weight.name}|{sha256_file(weight)}|".encode())
        _FINGERPRINTS[key] = {
            "path": str(path),
            "sha256": digest.hexdigest() if weights else None,
            "files": [p.name for p in weights],
        }
    return dict(_FINGERPRINTS[key])


def base_models(config) -> dict[str, dict[str, Any]]:
    """Fingerprints of the run's pretrained bases, keyed by config section (e.g. "model.decoder")."""
    out = {}
    for key in BASE_MODEL_KEYS:
        path = _section(config, key).pretrained_path
        if path:
            out[key] = base_model_fingerprint(path)
    return out


def _section(config, key: str):
    section = config
    for part in key.split("."):
        section = getattr(section, part)
    return section


def collect(config) -> dict[str, Any]:
    """The provenance of a run about to train with `config` (see the module docstring)."""
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "command": list(sys.argv),
        "device": describe_device(config.train.device),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_manifest": data_manifest(config.data),
        "base_models": base_models(config),
    }


def write_provenance(run_dir: str | Path, config) -> None:
    atomic_write_text(Path(run_dir) / PROVENANCE_FILE, json.dumps(collect(config), indent=2) + "\n")


def read_provenance(run_dir: str | Path) -> dict[str, Any]:
    """The run's provenance.json ({} when absent: a run written before provenance existed)."""
    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return {}
    return read_json_object(path, "provenance file", "the JSON object leadrrg train writes")


def check_base_models(run_dir: str | Path, config) -> None:
    """Refuse to build the run's model on a base whose fingerprint differs from the one it was trained on."""
    saved = read_provenance(run_dir).get("base_models") or {}
    for key, trained in saved.items():
        if key not in BASE_MODEL_KEYS or not trained.get("sha256"):
            continue
        path = _section(config, key).pretrained_path
        if not path:
            raise LeadrrgError(
                f"{run_dir} was trained on the base model {trained['path']} ({key}.pretrained_path) but the config "
                f"has none; expected --set {key}.pretrained_path=DIR"
            )
        if not Path(path).expanduser().is_dir():
            raise LeadrrgError(
                f"{key}.pretrained_path {path} does not exist; expected the base model {run_dir} was trained on "
                f"(fingerprint {trained['sha256'][:16]}): give its new place with --set {key}.pretrained_path=DIR"
            )
        now = base_model_fingerprint(path)
        if now["sha256"] != trained["sha256"]:
            raise LeadrrgError(
                f"the base model at {now['path']} ({key}.pretrained_path, fingerprint "
                f"{str(now['sha256'])[:16]}) is not the one {run_dir} was trained on ({trained['path']}, "
                f"fingerprint {trained['sha256'][:16]}); expected the same base weights"
            )
