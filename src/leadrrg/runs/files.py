"""A trained run's files as inference reads them: file names, model weights (checksummed safetensors) and
`load_run`. Training writes them (`leadrrg.train.checkpoint`, which adds the resumable checkpoint); generation,
evaluation, the API and the service read them through this module only, without the training code.

Weights: with a frozen pretrained base (LoRA), only trainable parameters and buffers are saved and the
base is rebuilt from `decoder.pretrained_path` in config.json; from scratch, everything. Loading checks
keys strictly: the only keys allowed to be absent from the file are the model's frozen parameters and
aliases of tied weights. The file also holds a SHA-256 over its tensors and the model config it was built
from; both are verified on load.

What `--set` may change on a trained run is checked here only (`check_trained_overrides`): by `load_run` for
every caller (the model's MOVABLE_SETTINGS), and with a command's narrower prefixes by the CLI and experiments.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from leadrrg.config import RunConfig, apply_overrides, first_difference, load_run_config, to_dict
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.io import path_problem
from leadrrg.model.lead import LeadModel
from leadrrg.runs.provenance import check_base_models

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.json"
THRESHOLDS_FILE = "thresholds.json"  # per-finding expert thresholds (leadrrg.inference.calibrate)


def build_model(config: RunConfig, tokenizer: ReportTokenizer) -> nn.Module:
    """The LeadModel of `config.model` for this tokenizer's vocabulary."""
    return LeadModel(config.model, tokenizer.vocab_size, tokenizer.pad_id)


# --------------------------------------------------------------------------------------------------
# Model weights


def frozen_parameter_names(model: nn.Module) -> set[str]:
    """State-dict names of parameters that do not train (e.g. a pretrained base under LoRA); these are
    rebuilt from the pretrained path, not saved. Tied aliases are included (remove_duplicate=False)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _storage_key(tensor: torch.Tensor) -> tuple:
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
    )


def weights_to_save(
    model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, aliases): the state dict minus frozen parameters, with tied tensors saved once;
    `aliases` maps each skipped tied name to the saved name it shares memory with. `state_dict` stands in for
    `model.state_dict()` where that holds shards (a model trained with train.strategy=fsdp: its full state)."""
    frozen = frozen_parameter_names(model)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple, str] = {}
    for name, tensor in (model.state_dict() if state_dict is None else state_dict).items():
        if name in frozen:
            continue
        key = _storage_key(tensor)
        if key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = tensor.detach().to("cpu").contiguous().clone()
    return tensors, aliases


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the checksum saved with the
    weights and verified when they are loaded (a bit flipped on disk is found, not decoded)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def save_model_weights(
    model: nn.Module, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """The weights (see `weights_to_save`), their checksum and the model config they were built from."""
    tensors, aliases = weights_to_save(model, state_dict)
    metadata = {
        "format": "leadrrg",
        "aliases": json.dumps(aliases),
        "frozen_omitted": str(len(frozen_parameter_names(model))),
        "tensors_sha256": tensors_sha256(tensors),
    }
    if dataclasses.is_dataclass(getattr(model, "config", None)):
        metadata["model_config"] = json.dumps(to_dict(model.config))
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())  # safetensors creates 0600 files; give it the mode open() would


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, or a LeadrrgError naming it."""
    path = Path(path)
    problem = path_problem(path)
    if problem:
        raise LeadrrgError(f"{path} {problem}; expected a safetensors file written by leadrrg train")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = list(handle.keys())  # safe_open is not a dict
            return {key: handle.get_tensor(key) for key in names}, dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise LeadrrgError(f"{path} is not a readable safetensors file ({exc})") from None


def load_model_weights(model: nn.Module, path: str | Path) -> None:
    """Load saved weights into `model` with strict key checking: every saved key must exist in the
    model, and every model key must be in the file unless it is frozen (allow-listed) or a tied alias."""
    tensors, metadata = read_safetensors(path)
    check_weights_file(path, model, tensors, metadata)
    aliases = json.loads(metadata.get("aliases", "{}"))
    allowed_missing = frozen_parameter_names(model) | set(aliases)
    expected = set(model.state_dict())
    unexpected = sorted(set(tensors) - expected)
    missing = sorted(expected - set(tensors) - allowed_missing)
    if unexpected or missing:
        raise LeadrrgError(
            f"{path} does not match the model built from config.json: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    state = model.state_dict()
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise LeadrrgError(
                f"{path} does not match the model built from config.json: {name} is {tuple(tensor.shape)} in the "
                f"file but {tuple(state[name].shape)} in the model; expected the config.json the weights were trained with"
            )
    result = model.load_state_dict(tensors, strict=False)
    # load_state_dict's own report, held to the same allow-list.
    leftover = set(result.missing_keys) - allowed_missing
    if leftover or result.unexpected_keys:
        raise LeadrrgError(
            f"{path}: keys not loaded {sorted(leftover)[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def weights_checksum(path: str | Path) -> str | None:
    """The checksum saved in a weights file's header (None for files written before checksums)."""
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return (handle.metadata() or {}).get("tensors_sha256")


def check_weights_file(
    path: Path, model: nn.Module, tensors: dict[str, torch.Tensor], metadata: dict
) -> None:
    """The saved checksum matches the tensors, and the model config saved with them matches the model's
    (files written before checksums existed are accepted with a warning)."""
    expected = metadata.get("tensors_sha256")
    if expected is None:
        logger.warning(
            "%s has no checksum (written by an older leadrrg); its integrity is not verified", path
        )
    elif tensors_sha256(tensors) != expected:
        raise LeadrrgError(
            f"{path} is damaged: its tensors do not match the checksum saved with them; expected the file as "
            "leadrrg train wrote it (restore it from a copy, or resume or retrain the run)"
        )
    saved_config = metadata.get("model_config")
    if saved_config is not None and dataclasses.is_dataclass(getattr(model, "config", None)):
        saved = weight_defining(json.loads(saved_config))
        now = _known_to(saved, weight_defining(to_dict(model.config)))
        difference = first_difference(now, saved, "model", now="in config.json", saved="in the weights")
        if difference:
            raise LeadrrgError(
                f"config.json does not match {path} at {difference}; expected the config.json the weights were "
                "trained with"
            )


# Model settings that may change after training without changing what the weights mean.
MOVABLE_SETTINGS = ("pretrained_path", "load_dtype", "gradient_checkpointing", "freeze")


def weight_defining(config: Any) -> Any:
    """A model config dict without MOVABLE_SETTINGS: what must match for saved weights to mean the same."""
    if not isinstance(config, dict):
        return config
    return {key: weight_defining(value) for key, value in config.items() if key not in MOVABLE_SETTINGS}


def _known_to(saved: Any, now: Any) -> Any:
    """`now` without the settings `saved` lacks: a setting added after the weights were written is not compared
    (`config.load_run_config` gives it the value the run was trained with)."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return now
    return {key: _known_to(saved[key], value) for key, value in now.items() if key in saved}


def training_device(config: RunConfig) -> torch.device:
    """The device the run trained on (train.device; auto: CUDA when available): where the demo and the
    benchmarks generate after training, instead of the CPU."""
    preference = config.train.device
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    return device if device.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")


def check_trained_overrides(
    overrides: Sequence[str], allowed: Sequence[str] | None = None, when: str = "at load"
) -> None:
    """The one allow-list of what `--set` may change on a trained run: with `allowed` (a command's or an
    experiment's prefixes, e.g. `decode.`), only keys under them; and of the model's settings only
    MOVABLE_SETTINGS, whatever the caller (the weights must keep their meaning)."""
    for text in overrides:
        if allowed is not None and not text.strip().startswith(tuple(allowed)):
            sections = " and ".join(f"{prefix}*" for prefix in allowed)
            raise LeadrrgError(
                f"--set {text!r}: only {sections} can be changed {when} (the model is trained)"
            )
        key = text.split("=", 1)[0].strip()
        if key.startswith("model.") and key.rsplit(".", 1)[-1] not in MOVABLE_SETTINGS:
            raise LeadrrgError(
                f"--set {text!r}: the trained model's {key} cannot change at load; expected one of "
                f"{', '.join(MOVABLE_SETTINGS)} (e.g. model.decoder.pretrained_path=DIR)"
            )


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", overrides: Sequence[str] = ()
) -> tuple[nn.Module, ReportTokenizer, RunConfig]:
    """(model in eval mode on `device`, tokenizer, config) of a trained run directory. `overrides` are typed
    `--set` overrides applied to config.json before the model is built, held to `check_trained_overrides` (e.g.
    `model.decoder.pretrained_path=DIR` for a run whose base model moved). The base model's fingerprint is
    checked against the run's provenance.json (`leadrrg.runs.provenance`)."""
    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR):
        if not (run_dir / name).exists():
            raise LeadrrgError(
                f"{run_dir} is not a trained leadrrg run: {name} is missing (train one with `leadrrg train`)"
            )
    check_trained_overrides(overrides)
    config = apply_overrides(load_run_config(run_dir / CONFIG_FILE), list(overrides))
    check_base_models(run_dir, config)
    tokenizer = ReportTokenizer.load(run_dir / TOKENIZER_DIR)
    model = build_model(config, tokenizer)
    load_model_weights(model, run_dir / MODEL_FILE)
    warn_if_unfinished(run_dir, config)
    model.to(device).eval()
    if config.decode.dtype != "float32":  # decoding only: the language model in half precision
        model.lm.to(getattr(torch, config.decode.dtype))
    return model, tokenizer, config


def trained_steps(run_dir: str | Path) -> int | None:
    """Optimizer steps of the run's current checkpoint (read only: a run may be training), None if unknown."""
    try:
        state = json.loads((Path(run_dir) / CHECKPOINT_DIR / STATE_FILE).read_text(encoding="utf-8"))
        return int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def warn_if_unfinished(run_dir: Path, config: RunConfig) -> None:
    steps = trained_steps(run_dir)
    if steps is not None and steps < config.train.max_steps:
        logger.warning(
            "%s is unfinished: its weights have trained %d of train.max_steps=%d steps (continue it with "
            "`leadrrg train --resume --out %s`)",
            run_dir,
            steps,
            config.train.max_steps,
            run_dir,
        )
