"""Tiny SynthCXR data and a tiny run config shared by the training tests (CPU, seconds); no tests here."""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import RunConfig, apply_overrides, load_preset

# A model small enough to train a few steps in about a second on a CPU core.
TINY_MODEL = [
    "model.vision.image_size=32",
    "model.vision.hidden_size=16",
    "model.vision.num_layers=3",
    "model.experts.hidden_size=16",
    "model.experts.num_heads=2",
    "model.decoder.hidden_size=32",
    "model.decoder.num_layers=2",
    "model.decoder.num_heads=4",
    "model.decoder.num_kv_heads=2",
    "model.decoder.intermediate_size=48",
    "model.decoder.vocab_size=300",
    "data.max_report_tokens=24",
]
TINY_TRAIN = [
    "train.batch_size=4",
    "train.max_steps=4",
    "train.warmup_steps=1",
    "train.eval_every=2",
    "train.save_every=2",
    "train.log_every=1",
    "train.eval_batches=1",
    "train.device=cpu",
    "data.num_workers=0",
    "model.grounding.expert_warmup_steps=0",  # the default stage 1 is 600 steps; its tests set their own
    "model.grounding.counterfactual=0",  # the default edits 80% of the reports; its tests set their own
]


def make_synth(root: Path, train: int = 24, val: int = 8) -> Path:
    """A SynthCXR set of 64 px studies (train and val splits)."""
    from leadrrg.data.synth.generate import synthesize

    return synthesize(root, {"train": train, "val": val}, size=64, seed=0)


def tiny_config(data_root: Path, *overrides: str) -> RunConfig:
    """The demo preset shrunk to a tiny model and a few steps, on `data_root`."""
    return apply_overrides(
        load_preset("demo"), [f"data.root={data_root}", *TINY_MODEL, *TINY_TRAIN, *overrides]
    )
