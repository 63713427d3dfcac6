"""Start-up of `leadrrg train --preset mimic_cxr` on a MIMIC-CXR-sized root: seconds to the first training step, cold
and warm, and the peak RSS of each process.

Builds (or reuses) a placeholder root of N entries (`make_mimic_root.py`: R2Gen layout, SynthCXR report text, one
64 px JPEG per entry; default 276,778 entries, MIMIC-CXR's) and trains on it twice with a fresh cache folder:

- `cold`: nothing cached (the labeler labels every report, every image header is checked);
- `warm`: the same command again (labels from the labeler cache, headers unchanged since the cold start skipped).

Each start runs `--ranks` processes as torchrun would (gloo on CPU, RANK / WORLD_SIZE / MASTER_ADDR set), each
calling `leadrrg.train.loop.train` and stopping after its first optimizer step (a step callback). "first step s" is
from launching the processes to the end of that step, imports included; stage 1 is skipped
(`model.grounding.expert_warmup_steps=0`: its first step would come after the same start-up). The start-up lines
rank 0 printed (`leadrrg train: ...`) follow each start. Target: the first step within 60 s of the start, warm.

    python benchmarks/bench_startup.py [--entries 276778] [--root DIR] [--ranks 2] [--set train.batch_size=4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SETTINGS = ("train.device=cpu", "model.grounding.expert_warmup_steps=0", "train.tracker=none")


class FirstStep(Exception):
    """Raised by the step callback: the first step is done."""


def run_worker(root: str, out: str, launched: float, settings: list[str]) -> dict:
    """Train on `root` into `out` until the first step ends -> {"rank", "first_step_s", "peak_rss_mb"}."""
    from leadrrg.config import apply_overrides, load_preset
    from leadrrg.train.loop import train

    config = apply_overrides(load_preset("mimic_cxr"), [f"data.root={root}", *settings])
    first_step: dict = {}

    def stop_after_first_step(step: int, record: dict) -> None:
        first_step["seconds"] = time.time() - launched
        raise FirstStep

    with contextlib.suppress(FirstStep):
        train(config, out, callbacks=[stop_after_first_step])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rank = int(os.environ.get("RANK", "0"))
    return {"rank": rank, "first_step_s": round(first_step["seconds"], 1), "peak_rss_mb": round(peak_mb)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(root: str, out: Path, ranks: int, cache: Path, settings: list[str]) -> tuple[list[dict], str]:
    """One start of `ranks` processes -> (each rank's result, rank 0's start-up lines)."""
    env = {key: value for key, value in os.environ.items() if key != "LEADRRG_HEADER_CACHE"}
    env.update(LEADRRG_CACHE=str(cache), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if ranks > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(ranks))
    launched = time.time()
    processes = []
    for rank in range(ranks):
        command = [sys.executable, __file__, "--worker", "--root", root, "--out", str(out)]
        command += ["--launched", repr(launched), *(f"--set={s}" for s in settings)]
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)} if ranks > 1 else env
        processes.append(
            subprocess.Popen(command, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    results, said = [], ""
    for rank, process in enumerate(processes):
        stdout, stderr = process.communicate()
        if process.returncode:
            sys.exit(f"rank {rank} failed:\n{stderr[-4000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
        if rank == 0:
            said = "\n".join(line for line in stderr.splitlines() if line.startswith("leadrrg train: "))
    return results, said


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    get = lambda key: fields.get(key, "?").strip()  # noqa: E731
    return f"{get('Model name')} (family {get('CPU family')}, model {get('Model')}), {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--entries", type=int, default=276_778, help="annotation entries (MIMIC-CXR: 276,778)"
    )
    parser.add_argument(
        "--root", help="an existing placeholder root (else one is built in a temporary folder)"
    )
    parser.add_argument("--ranks", type=int, default=1, help="processes per start (DDP on gloo when > 1)")
    parser.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # internal: one rank
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = [*DEFAULT_SETTINGS, *args.set]
    if args.worker:
        print(json.dumps(run_worker(args.root, args.out, args.launched, args.set)))
        return
    print(cpu_name())
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(HERE))
        from make_mimic_root import given_or_built

        root = given_or_built(args.root, tmp, args.entries)
        cache = Path(tmp) / "cache"
        for name in ("cold", "warm"):
            results, said = start(root, Path(tmp) / f"run_{name}", args.ranks, cache, settings)
            print(f"\n{name}: {args.ranks} process(es), settings {' '.join(settings)}\n{said}")
            for row in results:
                print(
                    f"{name} rank {row['rank']}: first step {row['first_step_s']:.1f} s, peak RSS {row['peak_rss_mb']} MB"
                )


if __name__ == "__main__":
    main()
