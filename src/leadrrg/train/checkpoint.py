"""The run directory: self-describing, safetensors only, every write atomic.

```
RUN/
  config.json            the RunConfig (pretrained paths resolved to absolute local paths)
  tokenizer/             ReportTokenizer.save()
  provenance.json        versions, git commit, command, device, data manifest hash, base-model fingerprints
  model.safetensors      trainable weights of the latest checkpoint (what load_run reads)
  checkpoint/            everything --resume needs, swapped in as a whole:
    model.safetensors      same weights (hard link when the file system allows)
    optimizer.safetensors  optimizer state tensors, keyed "<parameter name>/<state key>"
    trainer_state.json     step, epoch, studies of the epoch consumed, RNG states, schedule, best metric,
                           and the optimizer's non-tensor state
  logs.jsonl             one JSON object per log / eval event
  logs.superseded.jsonl  records past the checkpoint a resume started from (the steps it trained again)
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
from safetensors.torch import save_file
from torch import nn

from leadrrg.config import RunConfig, save_config
from leadrrg.data.tokenizer import ReportTokenizer
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text
from leadrrg.runs.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    TOKENIZER_DIR,
    save_model_weights,
)
from leadrrg.runs.provenance import write_provenance
from leadrrg.train.guard import LOCK_FILE

logger = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.safetensors"
TMP_DIR = ".ckpt-tmp"
OLD_DIR = ".ckpt-old"
LOG_FILE = "logs.jsonl"
SUPERSEDED_LOG_FILE = "logs.superseded.jsonl"  # records of steps that a resume trained again
TB_DIR = "tb"
FORMAT_VERSION = 2  # 2: the data position is global (samples_in_epoch), not per-process batches


# --------------------------------------------------------------------------------------------------
# Optimizer state: tensors flattened by parameter name, the rest as JSON


def optimizer_state_to_save(
    optimizer: torch.optim.Optimizer, param_names: list[str], state: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON) of `optimizer.state_dict()`, or of `state` in its format (a sharded optimizer's full state)."""
    state = optimizer.state_dict() if state is None else state
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


def saved_optimizer_state(param_names: list[str], tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    """The `optimizer.state_dict()` that `optimizer_state_to_save` wrote, for an optimizer over `param_names`."""
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
    return {"state": state, "param_groups": saved["param_groups"]}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, param_names: list[str], tensors: dict[str, torch.Tensor], saved: dict
) -> None:
    optimizer.load_state_dict(saved_optimizer_state(param_names, tensors, saved))


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
    return run_dir.is_dir() and any(path.name != LOCK_FILE for path in run_dir.iterdir())


def init_run_dir(run_dir: str | Path, config: RunConfig, tokenizer: ReportTokenizer) -> Path:
    """Write config.json, tokenizer/ and provenance.json of a new run (each complete or absent)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run_dir / TOKENIZER_DIR)
    save_config(config, run_dir / CONFIG_FILE)
    write_provenance(run_dir, config)  # versions, command, data manifest and base-model fingerprints
    return run_dir


def recover_checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The run's complete checkpoint directory, repairing an interrupted swap; None when there is none."""
    run_dir = Path(run_dir)
    final, old, tmp = run_dir / CHECKPOINT_DIR, run_dir / OLD_DIR, run_dir / TMP_DIR
    _remove(tmp)  # a half-written checkpoint is never used
    if not final.exists() and old.exists():
        os.replace(old, final)  # killed between the two renames: the previous checkpoint is complete
    _remove(old)
    check_not_linked(final)
    return final if (final / STATE_FILE).is_file() else None


def _remove(path: Path) -> None:
    """Remove a folder, or a symbolic link itself (never what it points to; rmtree refuses a link)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def check_not_linked(final: Path) -> None:
    """Refuse a `checkpoint/` that is a symbolic link: each save renames a new folder into its place, which
    would move the link aside and leave what it points to behind (and block every later save)."""
    if final.is_symlink():
        target = os.readlink(final)
        raise LeadrrgError(
            f"{final} is a symbolic link (to {target}); expected the checkpoint folder itself, since every save "
            f"replaces it by renaming: put the folder back in place of the link (rm {final} && mv {target} "
            f"{final}), or move or link the whole run directory instead"
        )


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
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint and swap it in atomically; then point RUN/model.safetensors at it.
    `model_state` / `optimizer_state` stand in for the state dicts of a sharded model and optimizer (their full
    states, `sharding.full_model_state` / `full_optimizer_state`): the files are the same either way."""
    run_dir = Path(run_dir)
    tmp, final, old = run_dir / TMP_DIR, run_dir / CHECKPOINT_DIR, run_dir / OLD_DIR
    check_not_linked(final)
    _remove(tmp)
    try:
        tmp.mkdir(parents=True)
        save_model_weights(model, tmp / MODEL_FILE, model_state)
        optimizer_tensors, optimizer_json = optimizer_state_to_save(optimizer, param_names, optimizer_state)
        save_file(optimizer_tensors, str(tmp / OPTIMIZER_FILE))
        state = {"format_version": FORMAT_VERSION, **trainer_state, "optimizer": optimizer_json}
        atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1) + "\n")
        for path in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    except BaseException:  # e.g. a full disk: the half-written copy would only hold the space
        _remove(tmp)
        raise
    if final.exists():
        _remove(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _remove(old)
    _link_or_copy(final / MODEL_FILE, run_dir / MODEL_FILE)
    return final


STATE_KEYS = ("step", "epoch", "optimizer")


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
