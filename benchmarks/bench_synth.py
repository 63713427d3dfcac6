"""SynthCXR throughput: studies per second (findings + report + image render + PNG encode and write).

    .venv/bin/python benchmarks/bench_synth.py [--studies 200] [--sizes 128 224] [--workers 2]

Prints, per image size, single-process studies/s (that is the per-core figure), the render-only share,
and optionally a multi-process run through `synthesize`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def bench_single(size: int, studies: int, out: Path) -> tuple[float, float]:
    from leadrrg.data.synth.generate import SynthConfig, _png_bytes, make_study, sample_findings
    from leadrrg.data.synth.render import render_image

    config = SynthConfig()
    make_study("train", 0, size, 0, config)  # warm up (imports, caches)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(studies):
        record, image = make_study("train", i, size, 0, config)
        (out / f"{size}_{i}.png").write_bytes(_png_bytes(image))
    full = studies / (time.perf_counter() - start)
    print(
        f"size {size:4d}: {studies / (time.process_time() - cpu):7.1f} studies per CPU-second (robust to a busy machine)"
    )
    import numpy as np

    rng = np.random.default_rng(0)
    findings = [sample_findings(rng, config) for _ in range(studies)]
    start = time.perf_counter()
    for f in findings:
        render_image(f, size, rng)
    render = studies / (time.perf_counter() - start)
    return full, render


def bench_pool(size: int, studies: int, workers: int, out: Path) -> float:
    from leadrrg.data.synth.generate import synthesize

    start = time.perf_counter()
    synthesize(out / f"pool_{size}", {"train": studies}, size=size, seed=0, workers=workers)
    return studies / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument(
        "--workers", type=int, default=0, help="also time synthesize() with W processes (0: skip)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for size in args.sizes:
            full, render = bench_single(size, args.studies, out)
            print(
                f"size {size:4d}: {full:7.1f} studies/s per core (1 process, render+report+png), "
                f"render only {render:7.1f} images/s"
            )
            if args.workers > 1:
                pooled = bench_pool(size, args.studies, args.workers, out)
                print(
                    f"size {size:4d}: {pooled:7.1f} studies/s with {args.workers} workers "
                    f"({pooled / args.workers:.1f} per worker, incl. process start-up)"
                )


if __name__ == "__main__":
    main()
