"""Seconds per training step of several variants of one preset, measured in one process in interleaved rounds.

Every variant is the preset plus its own `--set` overrides; all are built first, then trained on the same batches
(collated once per variant, since a variant may change the tokens), one step of each per round, so that background
load hits them alike. Prints each variant's median step time and its ratio to the first variant. This is how the
levers of a pretrained decoder on a CPU were weighed (docs/TRAINING.md, "A pretrained decoder on a CPU").

    .venv/bin/python benchmarks/bench_train_variants.py --data DIR --preset synth_smollm2 \\
        --set model.decoder.pretrained_path=STANDIN \\
        --variant fp32: --variant bf16:train.precision=bf16 \\
        --variant attention_lora:train.precision=bf16,lora_targets=q_proj+k_proj+v_proj+o_proj \\
        [--warmup 2] [--steps 3] [--threads 1] [--json OUT.json]

A variant is NAME:KEY=VALUE,KEY=VALUE (comma-separated `--set` overrides; none after the colon: the preset as is).
Two keys are not config fields: `lora_targets=a+b+...` puts the LoRA adapters on those projections only (the
backbone registry adapts attention and MLP; this measures the alternative without a config switch), and
`threads=N` runs that variant's steps on N torch threads (default --threads).
DIR is a SynthCXR set (`leadrrg synth`); only its train split is read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import statistics
import time
from collections.abc import Iterator

import torch

from leadrrg.collectives import DistContext
from leadrrg.config import apply_overrides, load_preset
from leadrrg.model.decoder import BACKBONES
from leadrrg.train.build import build_task, make_train_loader, resolve_paths, set_loader_epoch
from leadrrg.train.optim import build_optimizer, set_learning_rates
from leadrrg.train.step import peak_memory_mb, train_step


def parse_variant(text: str) -> tuple[str, list[str], tuple[str, ...] | None, int]:
    """NAME:k=v,k=v -> (name, overrides, LoRA targets or None, torch threads or 0)."""
    name, _, rest = text.partition(":")
    overrides, lora_targets, threads = [], None, 0
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, _, value = item.partition("=")
        if key == "lora_targets":
            lora_targets = tuple(value.split("+"))
        elif key == "threads":
            threads = int(value)
        else:
            overrides.append(item)
    return name, overrides, lora_targets, threads


@contextlib.contextmanager
def lora_targets_of(backbone: str, targets: tuple[str, ...] | None) -> Iterator[None]:
    """Build with LoRA on `targets` of `backbone` instead of its registered projections (None: as registered)."""
    if targets is None:
        yield
        return
    entries = BACKBONES._entries  # a measurement-only swap, restored on exit
    registered = entries[backbone]
    entries[backbone] = dataclasses.replace(registered, lora_targets=targets)
    try:
        yield
    finally:
        entries[backbone] = registered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SynthCXR data root")
    parser.add_argument("--preset", default="synth_smollm2")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE,...")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cpu")
    ctx = DistContext(device=device)
    base = apply_overrides(load_preset(args.preset), [f"data.root={args.data}", *args.overrides])
    runs = []
    for text in args.variant:
        name, overrides, lora_targets, threads = parse_variant(text)
        config = resolve_paths(apply_overrides(base, overrides))
        with lora_targets_of(config.model.decoder.backbone, lora_targets):
            task = build_task(config, ctx)
        model = task.model.train()
        optimizer, _ = build_optimizer(model, config.train)
        set_learning_rates(optimizer, config.train.warmup_steps, config.train)  # peak lr
        loader, sampler = make_train_loader(task, ctx)
        set_loader_epoch(loader, sampler, 0, 0)
        needed = (args.warmup + args.steps) * config.train.grad_accum_steps
        batches = iter(list(itertools.islice(itertools.cycle(loader), needed)))
        runs.append(
            dict(
                name=name,
                threads=threads or torch.get_num_threads(),
                config=config,
                model=model,
                optimizer=optimizer,
                batches=batches,
                times=[],
            )
        )
        del task, loader

    for index in range(args.warmup + args.steps):
        for run in runs:  # one step of each variant per round
            torch.set_num_threads(run["threads"])
            started = time.perf_counter()
            train_step(run["model"], run["optimizer"], run["batches"], run["config"].train, device)
            if index >= args.warmup:
                run["times"].append(time.perf_counter() - started)

    reference = statistics.median(runs[0]["times"])
    results = []
    for run in runs:
        median = statistics.median(run["times"])
        results.append(
            {
                "variant": run["name"],
                "median_step_s": median,
                "ratio_to_first": median / reference,
                "hours_per_1000_steps": median * 1000 / 3600,
                "batch_size": run["config"].train.batch_size,
                "threads": run["threads"],
                "times_s": run["times"],
            }
        )
        print(
            f"{run['name']:28s} {median:7.2f} s/step  x{median / reference:5.2f}  "
            f"{median * 1000 / 3600:5.2f} h / 1,000 steps  (batch {run['config'].train.batch_size}, "
            f"{run['threads']} threads)"
        )
    summary = {
        "preset": args.preset,
        "peak_memory_mb": peak_memory_mb(device),
        "variants": results,
    }
    print(f"peak RSS {summary['peak_memory_mb']:.0f} MiB (all variants together)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summary, out, indent=2)


if __name__ == "__main__":
    main()
