"""Training throughput of LEAD (fusion=layerwise) against the plain LVLM baseline (fusion=none).

Both models are built from the same preset in one process and trained on the same batches (collated once,
so image decoding does not blur the comparison), in interleaved rounds so that background load hits both
alike. Prints studies/s of each, the ratio of their step times (target < 1.10) and peak memory.

    .venv/bin/python benchmarks/bench_train.py --data DIR [--preset demo] [--steps 20] [--device cpu]
        [--set key=value ...]

DIR is a SynthCXR set (`leadrrg synth`); only its train split is read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from leadrrg.collectives import DistContext
from leadrrg.config import apply_overrides, load_preset
from leadrrg.train.build import build_task, make_train_loader, resolve_paths, set_loader_epoch
from leadrrg.train.distributed import resolve_device
from leadrrg.train.optim import build_optimizer, set_learning_rates
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
    if "layerwise" not in fusions or "none" not in fusions:
        parser.error("--fusions must include layerwise and none")
    return args


def main() -> None:
    args = parse_args()

    device = resolve_device(args.device)
    ctx = DistContext(device=device)
    base = resolve_paths(  # ~ in a preset's pretrained_path, as `leadrrg train` reads it
        apply_overrides(load_preset(args.preset), [f"data.root={args.data}", *args.overrides])
    )
    runs = {}
    fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
    for fusion in fusions:
        config = apply_overrides(base, [f"model.injection.fusion={fusion}"])
        task = build_task(config, ctx)
        model = task.model.to(device).train()
        optimizer, _ = build_optimizer(model, config.train)
        set_learning_rates(optimizer, config.train.warmup_steps, config.train)  # peak lr
        runs[fusion] = {"config": config, "task": task, "model": model, "optimizer": optimizer, "times": []}
    # The same batches for both models (same seed, same tokenizer corpus, same order).
    task = runs["layerwise"]["task"]
    loader, sampler = make_train_loader(task, ctx)
    set_loader_epoch(loader, sampler, 0, 0)
    needed = (args.warmup + args.steps) * base.train.grad_accum_steps
    batches = list(itertools.islice(itertools.cycle(loader), needed))
    per_round = max(args.steps // args.rounds, 1)
    studies_per_step = base.train.batch_size * base.train.grad_accum_steps

    def steps(run, chunk):
        stream = iter(chunk)
        for _ in range(len(chunk) // base.train.grad_accum_steps):
            started = time.perf_counter()
            train_step(run["model"], run["optimizer"], stream, run["config"].train, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            run["times"].append(time.perf_counter() - started)

    accum = base.train.grad_accum_steps
    for run in runs.values():
        steps(run, batches[: args.warmup * accum])
        run["times"].clear()
    for start in range(args.warmup, args.warmup + args.steps, per_round):
        chunk = batches[start * accum : min(start + per_round, args.warmup + args.steps) * accum]
        for run in runs.values():
            steps(run, chunk)

    results = {}
    for fusion, run in runs.items():
        median = statistics.median(run["times"])
        results[fusion] = {
            "studies_per_s": studies_per_step / median,
            "median_step_s": median,
            "steps": len(run["times"]),
            "parameters_m": sum(p.numel() for p in run["model"].parameters()) / 1e6,
        }
    ratio = results["layerwise"]["median_step_s"] / results["none"]["median_step_s"]
    summary = {
        "preset": args.preset,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": base.train.batch_size,
        "image_size": base.model.vision.image_size,
        **{f"{k}_{name}": v for k, r in results.items() for name, v in r.items()},
        "step_time_ratio_layerwise_over_none": ratio,
        "peak_memory_mb": peak_memory_mb(device),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }
    for fusion, r in results.items():
        print(
            f"fusion={fusion:9s} {r['studies_per_s']:7.1f} studies/s  ({r['median_step_s'] * 1000:.0f} ms/step median of {r['steps']})"
        )
    print(f"step time ratio layerwise / none: {ratio:.3f} (target < 1.10)")
    print(f"peak memory: {summary['peak_memory_mb']:.0f} MiB ({summary['peak_memory_kind']})")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
