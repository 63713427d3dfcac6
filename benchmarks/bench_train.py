"""Training throughput of LEAD (fusion=layerwise) against the plain LVLM baseline (fusion=none), or with
`--group-by-length` of the plain batch order against length-grouped batches (`data.group_by_length`).

Both models are built from the same preset in one process and trained on the same batches (collated once,
so image decoding does not blur the comparison), in interleaved rounds so that background load hits both
alike. Prints studies/s of each, the ratio of their step times (target < 1.10) and peak memory.

With `--group-by-length`, one model (the preset's fusion) is built and copied, so both runs start from the same
weights; one trains on the plain order's batches, the other on the grouped order's (each its own first batches of
epoch 0). Prints each one's padding share (of the report positions the collator pads, and of all the decoder's
positions, the visual prompt included) in the timed batches and over the whole epoch (from the tokenised report
lengths), its step time, and the ratio grouped / plain.

    .venv/bin/python benchmarks/bench_train.py --data DIR [--preset demo] [--steps 20] [--device cpu]
        [--group-by-length] [--set key=value ...]

DIR is a SynthCXR set (`leadrrg synth`); only its train split is read.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time

import torch

from leadrrg.collectives import DistContext
from leadrrg.config import apply_overrides, load_preset
from leadrrg.train.build import (
    build_task,
    make_train_loader,
    resolve_paths,
    set_loader_epoch,
    train_report_lengths,
)
from leadrrg.train.distributed import resolve_device
from leadrrg.train.optim import build_optimizer, set_learning_rates
from leadrrg.train.sampler import padding_share
from leadrrg.train.step import peak_memory_mb, train_step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SynthCXR data root")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the timed steps are split into"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--fusions", default="layerwise,none", help="fusions to compare (input: experts without injection)"
    )
    parser.add_argument(
        "--group-by-length", action="store_true", help="compare plain and length-grouped batches instead"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
    if not args.group_by_length and ("layerwise" not in fusions or "none" not in fusions):
        parser.error("--fusions must include layerwise and none")
    return args


def first_batches(task, ctx, count: int, group_by_length: bool) -> tuple[list, list[list[int]]]:
    """The first `count` batches of epoch 0 (epochs repeated if short), and the epoch's batches of indices."""
    loader, sampler = make_train_loader(task, ctx, group_by_length=group_by_length)
    set_loader_epoch(loader, sampler, 0, 0)
    size = loader.batch_size
    indices = [index for index, _ in sampler]
    epoch = [indices[i : i + size] for i in range(0, len(indices) - len(indices) % size, size)]
    return list(itertools.islice(itertools.cycle(loader), count)), epoch


def new_run(config, task, model, device, batches, epoch=None) -> dict:
    model = model.to(device).train()
    optimizer, _ = build_optimizer(model, config.train)
    set_learning_rates(optimizer, config.train.warmup_steps, config.train)  # peak lr
    return {
        "config": config,
        "task": task,
        "model": model,
        "optimizer": optimizer,
        "times": [],
        "batches": batches,
        "epoch": epoch,
    }


def build_runs(args, base, ctx, device) -> dict[str, dict]:
    """name -> run: fusions on the same batches, or (`--group-by-length`) plain and grouped batches."""
    needed = (args.warmup + args.steps) * base.train.grad_accum_steps
    if args.group_by_length:
        task = build_task(base, ctx)
        runs = {}
        for name, grouped in (("plain", False), ("grouped", True)):
            batches, epoch = first_batches(task, ctx, needed, grouped)
            model = copy.deepcopy(task.model) if grouped else task.model  # the same initial weights
            runs[name] = new_run(base, task, model, device, batches, epoch)
        return runs
    runs = {}
    for fusion in [f.strip() for f in args.fusions.split(",") if f.strip()]:
        config = apply_overrides(base, [f"model.injection.fusion={fusion}"])
        task = build_task(config, ctx)
        runs[fusion] = new_run(config, task, task.model, device, None)
    # The same batches for both models (same seed, same tokenizer corpus, same order).
    batches, _ = first_batches(runs["layerwise"]["task"], ctx, needed, base.data.group_by_length)
    for run in runs.values():
        run["batches"] = batches
    return runs


def time_runs(runs: dict[str, dict], args, accum: int, device: torch.device) -> None:
    """Warm-up steps, then the timed steps in interleaved rounds (each run's step seconds in run["times"])."""

    def steps(run, start: int, stop: int) -> None:
        stream = iter(run["batches"][start * accum : stop * accum])
        for _ in range(stop - start):
            started = time.perf_counter()
            train_step(run["model"], run["optimizer"], stream, run["config"].train, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            run["times"].append(time.perf_counter() - started)

    for run in runs.values():
        steps(run, 0, args.warmup)
        run["times"].clear()
    per_round = max(args.steps // args.rounds, 1)
    for start in range(args.warmup, args.warmup + args.steps, per_round):
        for run in runs.values():
            steps(run, start, min(start + per_round, args.warmup + args.steps))


def visual_tokens(run: dict) -> int:
    """The visual prompt's length in decoder positions (one study of the run's first batch)."""
    model, batch = run["model"], run["batches"][0]
    model.eval()
    with torch.no_grad():
        tokens = model.encode_study(batch["images"][:1], batch["view_mask"][:1]).num_prompt_tokens
    model.train()
    return int(tokens)


def padding(run: dict, ctx: DistContext, visual: int) -> dict[str, float]:
    """Padding shares of the timed batches (report positions; all decoder positions) and of the whole epoch."""
    masks = [batch["attention_mask"] for batch in run["batches"]]
    real, total = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
    rows = sum(m.shape[0] for m in masks)
    lengths = train_report_lengths(run["task"], ctx)
    return {
        "report_padding": 1 - real / total,
        "decoder_padding": (total - real) / (total + rows * visual),
        "epoch_report_padding": padding_share(lengths, run["epoch"]),
        "mean_report_positions": total / rows,
    }


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    ctx = DistContext(device=device)
    base = resolve_paths(  # ~ in a preset's pretrained_path, as `leadrrg train` reads it
        apply_overrides(load_preset(args.preset), [f"data.root={args.data}", *args.overrides])
    )
    runs = build_runs(args, base, ctx, device)
    accum = base.train.grad_accum_steps
    extra = {}
    if args.group_by_length:
        visual = visual_tokens(runs["plain"])
        extra = {name: padding(run, ctx, visual) for name, run in runs.items()}
    time_runs(runs, args, accum, device)
    studies_per_step = base.train.batch_size * accum
    results = {}
    for name, run in runs.items():
        median = statistics.median(run["times"])
        results[name] = {
            "studies_per_s": studies_per_step / median,
            "median_step_s": median,
            "steps": len(run["times"]),
            "parameters_m": sum(p.numel() for p in run["model"].parameters()) / 1e6,
            **extra.get(name, {}),
        }
    first, second = ("grouped", "plain") if args.group_by_length else ("layerwise", "none")
    ratio = results[first]["median_step_s"] / results[second]["median_step_s"]
    summary = {
        "preset": args.preset,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": base.train.batch_size,
        "image_size": base.model.vision.image_size,
        **{f"{k}_{name}": v for k, r in results.items() for name, v in r.items()},
        f"step_time_ratio_{first}_over_{second}": ratio,
        "peak_memory_mb": peak_memory_mb(device),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }
    for name, r in results.items():
        label = name if args.group_by_length else f"fusion={name}"
        line = f"{label:9s} {r['studies_per_s']:7.1f} studies/s  ({r['median_step_s'] * 1000:.0f} ms/step median of {r['steps']})"
        if "report_padding" in r:
            line += (
                f"; padding {r['report_padding']:.1%} of report positions, {r['decoder_padding']:.1%} of decoder "
                f"positions (timed batches), {r['epoch_report_padding']:.1%} of report positions over the epoch"
            )
        print(line)
    target = "" if args.group_by_length else " (target < 1.10)"
    print(f"step time ratio {first} / {second}: {ratio:.3f}{target}")
    print(f"peak memory: {summary['peak_memory_mb']:.0f} MiB ({summary['peak_memory_kind']})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
