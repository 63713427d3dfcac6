"""The run directory: self-describing, safetensors only, every write atomic.

```
RUN/
  config.json            the RunConfig (pretrained paths resolved to absolute local paths)
  tokenizer/             ReportTokenizer.save()
  model.safetensors      trainable weights of the latest checkpoint (what load_run reads)
  checkpoint/            everything --resume needs, swapped in as a whole:
    model.safetensors      same weights (hard link when the file system allows)
    optimizer.safetensors  optimizer state tensors, keyed "<parameter name>/<state key>"
    trainer_state.json     step, epoch, position in epoch, RNG states, schedule, best metric,
                           and the optimizer's non-tensor state
  logs.jsonl             one JSON object per log / eval event
  tb/                    TensorBoard events
```

Weights: with a frozen pretrained base (LoRA), only trainable parameters and buffers are saved and the
base is rebuilt from `decoder.pretrained_path` in config.json; from scratch, everything. Loading checks
keys strictly: the only keys allowed to be absent from the file are the model's frozen parameters and
aliases of tied weights.

Atomicity: a checkpoint is written to `RUN/.ckpt-tmp/` and renamed to `RUN/checkpoint/` (the previous
one moved aside to `RUN/.ckpt-old/` first and deleted after), so a kill at any moment leaves a complete
checkpoint; `recover_checkpoint_dir` puts `.ckpt-old` back if a kill fell between the two renames.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from leadrrg.config import RunConfig, first_difference, load_run_config, save_config, to_dict
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, path_problem
from leadrrg.tokenizer import ReportTokenizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_DIR = "checkpoint"
TMP_DIR = ".ckpt-tmp"
OLD_DIR = ".ckpt-old"
LOG_FILE = "logs.jsonl"
TB_DIR = "tb"
FORMAT_VERSION = 1


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


def weights_to_save(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, aliases): the state dict minus frozen parameters, with tied tensors saved once;
    `aliases` maps each skipped tied name to the saved name it shares memory with."""
    frozen = frozen_parameter_names(model)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple, str] = {}
    for name, tensor in model.state_dict().items():
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


def save_model_weights(model: nn.Module, path: str | Path) -> None:
    """The weights (see `weights_to_save`), their checksum and the model config they were built from."""
    tensors, aliases = weights_to_save(model)
    metadata = {
        "format": "leadrrg",
        "aliases": json.dumps(aliases),
        "frozen_omitted": str(len(frozen_parameter_names(model))),
        "tensors_sha256": tensors_sha256(tensors),
    }
    if dataclasses.is_dataclass(getattr(model, "config", None)):
        metadata["model_config"] = json.dumps(to_dict(model.config))
    save_file(tensors, str(path), metadata=metadata)


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
        now, saved = _weight_defining(to_dict(model.config)), _weight_defining(json.loads(saved_config))
        difference = first_difference(now, saved, "model", now="in config.json", saved="in the weights")
        if difference:
            raise LeadrrgError(
                f"config.json does not match {path} at {difference}; expected the config.json the weights were "
                "trained with"
            )


# Model settings that may change after training without changing what the weights mean.
MOVABLE_SETTINGS = ("pretrained_path", "load_dtype", "gradient_checkpointing", "freeze")


def _weight_defining(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    return {key: _weight_defining(value) for key, value in config.items() if key not in MOVABLE_SETTINGS}


# --------------------------------------------------------------------------------------------------
# Optimizer state: tensors flattened by parameter name, the rest as JSON


def optimizer_state_to_save(
    optimizer: torch.optim.Optimizer, param_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        name = param_names[index]
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(name, {})[key] = value
    groups = [{k: v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"param_names": param_names, "param_groups": groups, "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, param_names: list[str], tensors: dict[str, torch.Tensor], saved: dict
) -> None:
    if saved["param_names"] != param_names:
        raise LeadrrgError(
            "the checkpoint's optimizer was built for different trainable parameters than this model "
            f"({len(saved['param_names'])} saved, {len(param_names)} now); resume with the run's own config"
        )
    index_of = {name: i for i, name in enumerate(param_names)}
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        name, _, field = key.rpartition("/")
        state.setdefault(index_of[name], {})[field] = tensor
    for name, values in saved["scalars"].items():
        state.setdefault(index_of[name], {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


# --------------------------------------------------------------------------------------------------
# RNG states as JSON (lists and base64; no pickles)


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _from_b64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_from_b64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_from_b64(s) for s in state["cuda"]])


# --------------------------------------------------------------------------------------------------
# Run directory


def is_run_dir(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(run_dir.iterdir())


def init_run_dir(run_dir: str | Path, config: RunConfig, tokenizer: ReportTokenizer) -> Path:
    """Write config.json and tokenizer/ of a new run (each complete or absent)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_DIR)
    save_config(config, run_dir / CONFIG_FILE)
    return run_dir


def recover_checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The run's complete checkpoint directory, repairing an interrupted swap; None when there is none."""
    run_dir = Path(run_dir)
    final, old, tmp = run_dir / CHECKPOINT_DIR, run_dir / OLD_DIR, run_dir / TMP_DIR
    shutil.rmtree(tmp, ignore_errors=True)  # a half-written checkpoint is never used
    if not final.exists() and old.exists():
        os.replace(old, final)  # killed between the two renames: the previous checkpoint is complete
    shutil.rmtree(old, ignore_errors=True)
    return final if (final / STATE_FILE).is_file() else None


def _link_or_copy(source: Path, target: Path) -> None:
    """Atomically make `target` a copy of `source` (a hard link when possible: no extra disk)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    trainer_state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint and swap it in atomically; then point RUN/model.safetensors at it."""
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / TMP_DIR, run_dir / CHECKPOINT_DIR, run_dir / OLD_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model_weights(model, tmp / MODEL_FILE)
    optimizer_tensors, optimizer_json = optimizer_state_to_save(optimizer, param_names)
    save_file(optimizer_tensors, str(tmp / OPTIMIZER_FILE))
    state = {"format_version": FORMAT_VERSION, **trainer_state, "optimizer": optimizer_json}
    atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1) + "\n")
    for path in tmp.iterdir():  # data on disk before the rename makes it visible
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    _link_or_copy(final / MODEL_FILE, run_dir / MODEL_FILE)
    return final


STATE_KEYS = ("step", "epoch", "batch_in_epoch", "optimizer")


def read_trainer_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The trainer state of a checkpoint directory, or a LeadrrgError saying it is damaged."""
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeadrrgError(
            f"{path} does not exist; expected the trainer state of a leadrrg checkpoint"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeadrrgError(
            f"{path} is damaged ({exc}); the run cannot be resumed from it (generation still reads model.safetensors)"
        ) from None
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise LeadrrgError(f"{path} lacks {missing}; expected the trainer state that leadrrg train writes")
    return state


@contextlib.contextmanager
def damaged_checkpoint(checkpoint_dir: Path) -> Iterator[None]:
    """Turn what a damaged trainer state makes the optimizer / RNG restore raise into a LeadrrgError naming it."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise LeadrrgError(
            f"{Path(checkpoint_dir) / STATE_FILE} is damaged ({type(exc).__name__}: {exc}); the run cannot be "
            "resumed from it (generation still reads model.safetensors)"
        ) from None


def update_trainer_state(run_dir: str | Path, values: dict[str, Any]) -> None:
    """Set `values` in the trainer state of the run's current checkpoint (atomically)."""
    path = Path(run_dir) / CHECKPOINT_DIR / STATE_FILE
    state = json.loads(path.read_text(encoding="utf-8"))
    atomic_write_text(path, json.dumps({**state, **values}, indent=1) + "\n")


def load_checkpoint(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(trainer_state, optimizer tensors, checkpoint dir) of a run, or a LeadrrgError."""
    checkpoint = recover_checkpoint_dir(run_dir)
    if checkpoint is None:
        raise LeadrrgError(
            f"{run_dir} has no checkpoint to resume from; expected {Path(run_dir) / CHECKPOINT_DIR / STATE_FILE}"
        )
    state = read_trainer_state(checkpoint)
    optimizer_tensors, _ = read_safetensors(checkpoint / OPTIMIZER_FILE)
    return state, optimizer_tensors, checkpoint


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ReportTokenizer, RunConfig]:
    """(model in eval mode on `device`, tokenizer, config) of a trained run directory."""
    from leadrrg.train.task import build_model

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR):
        if not (run_dir / name).exists():
            raise LeadrrgError(
                f"{run_dir} is not a trained leadrrg run: {name} is missing (train one with `leadrrg train`)"
            )
    config = load_run_config(run_dir / CONFIG_FILE)
    tokenizer = ReportTokenizer.load(run_dir / TOKENIZER_DIR)
    model = build_model(config, tokenizer)
    load_model_weights(model, run_dir / MODEL_FILE)
    warn_if_unfinished(run_dir, config)
    model.to(device).eval()
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
