"""Training: `train(config, out_dir, resume=False) -> summary` and `load_run(run_dir) -> (model,
tokenizer, config)`. Imported lazily so `import leadrrg.train` stays cheap."""

from __future__ import annotations

from typing import Any


def train(config, out_dir, resume: bool = False, **kwargs: Any) -> dict[str, Any]:
    """See `leadrrg.train.loop.train`."""
    from leadrrg.train.loop import train as _train

    return _train(config, out_dir, resume=resume, **kwargs)


def load_run(run_dir, device="cpu"):
    """See `leadrrg.run_files.load_run` (inference reads runs there, without the training code)."""
    from leadrrg.run_files import load_run as _load_run

    return _load_run(run_dir, device=device)


__all__ = ["load_run", "train"]
