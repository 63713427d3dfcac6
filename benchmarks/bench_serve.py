"""Service throughput and latency (a benchmark that prints, not a timed test).

Starts `leadrrg serve` in a subprocess on loopback, sends one-study requests at concurrency 1, 4 and 16, and
prints reports/s, p50 / p95 latency and errors per level; in the same run the offline throughput of the API at
batch 16 (`generate_batch`, the path of `leadrrg generate`); then a burst with corrupt files mixed in, which must
get 4xx for exactly the bad ones and 200 for the rest.

    python benchmarks/bench_serve.py --run runs/demo/lead [--images DIR] [--requests 48] [--threads 2]

Without --run an untrained model of the `demo` preset is built in a temporary folder (same compute per token; it
always writes max_new_tokens tokens). Without --images, 16 SynthCXR radiographs are rendered. Targets: at
concurrency 16, served throughput >= 0.8 x offline; zero errors; the burst exact.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONCURRENCY = (1, 4, 16)


def synth_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    from leadrrg.data.synth.generate import make_study
    from leadrrg.data.synth.types import SynthConfig

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        _, image = make_study("test", index, 128, 0, SynthConfig())
        path = folder / f"synth_{index:03d}.png"
        Image.fromarray(image, mode="L").save(path)
        paths.append(path)
    return paths


def untrained_demo_run(folder: Path) -> Path:
    import torch

    from leadrrg.config import load_preset
    from leadrrg.data.tokenizer import ReportTokenizer
    from leadrrg.model.lead import LeadModel
    from leadrrg.runs.files import save_model_weights
    from leadrrg.train.checkpoint import init_run_dir

    config = load_preset("demo")
    texts = ["the heart size is normal. the lungs are clear. no pleural effusion or pneumothorax."] * 50
    tokenizer = ReportTokenizer.train(texts, vocab_size=300)
    torch.manual_seed(0)
    model = LeadModel(config.model, tokenizer.vocab_size, tokenizer.pad_id)
    init_run_dir(folder, config, tokenizer)
    save_model_weights(model, folder / "model.safetensors")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run: Path, port: int, threads: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    from leadrrg.serve.client import request

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "leadrrg", "serve", "--run", str(run), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--max-queue", "256", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"leadrrg serve exited with {process.returncode}")
        try:
            if request(f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200:
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("leadrrg serve did not start within 120 s")


def served_counts(url: str) -> tuple[int, int]:
    from leadrrg.serve.client import request

    service = request(url + "/v1/model")[1]["service"]
    return service["batches"], service["studies"]


def load_level(url: str, files: list[tuple[str, bytes]], concurrency: int, requests: int) -> dict:
    from leadrrg.serve.client import post_report

    batches, studies = served_counts(url)

    def one(index: int) -> tuple[int, float]:
        start = time.perf_counter()
        status, _ = post_report(url, [files[index % len(files)]], timeout=300)
        return status, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    latencies = sorted(seconds for _, seconds in results)
    batches_after, studies_after = served_counts(url)
    return {
        "mean_batch": (studies_after - studies) / max(batches_after - batches, 1),
        "concurrency": concurrency,
        "requests": requests,
        "reports_per_s": sum(status == 200 for status, _ in results) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "errors": sum(status != 200 for status, _ in results),
    }


def burst(url: str, files: list[tuple[str, bytes]], size: int = 16) -> dict:
    from leadrrg.serve.client import post_report

    bad = set(range(2, size, 5))
    payloads = [[("corrupt.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200))] if i in bad else [files[i % len(files)]]
                for i in range(size)]  # fmt: skip
    with ThreadPoolExecutor(size) as pool:
        statuses = [status for status, _ in pool.map(lambda p: post_report(url, p, timeout=300), payloads)]
    got_bad = {i for i, status in enumerate(statuses) if 400 <= status < 500}
    ok = {i for i, status in enumerate(statuses) if status == 200}
    return {"requests": size, "corrupt": len(bad), "exact": got_bad == bad and ok == set(range(size)) - bad,
            "statuses": statuses}  # fmt: skip


def offline(run: Path, paths: list[Path], studies: int, threads: int) -> float:
    import torch

    import leadrrg

    torch.set_num_threads(threads)
    generator = leadrrg.load(run, device="cpu")
    batch = [str(paths[i % len(paths)]) for i in range(studies)]
    generator.generate_batch(batch[:16], batch_size=16)  # warm-up
    start = time.perf_counter()
    generator.generate_batch(batch, batch_size=16)
    return studies / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="trained run directory (default: an untrained demo-preset model)")
    parser.add_argument("--images", help="folder of PNG/JPEG/DICOM images (default: 16 SynthCXR renders)")
    parser.add_argument(
        "--requests", type=int, default=48, help="requests per concurrency level (default 48)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads, server and offline alike")
    parser.add_argument(
        "--max-wait-ms", type=float, default=40.0, help="the server's batching wait (its default)"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as scratch:
        scratch = Path(scratch)
        run = Path(args.run) if args.run else untrained_demo_run(scratch / "run")
        if args.images:
            paths = sorted(
                p
                for p in Path(args.images).iterdir()
                if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm")
            )[:64]
        else:
            paths = synth_images(scratch / "images", 16)
        files = [(p.name, p.read_bytes()) for p in paths]
        offline_rate = offline(run, paths, max(args.requests, 32), args.threads)
        port = free_port()
        server = start_server(run, port, args.threads, max_batch=16, max_wait_ms=args.max_wait_ms)
        try:
            url = f"http://127.0.0.1:{port}"
            load_level(url, files, 4, 8)  # warm-up
            levels = [load_level(url, files, c, args.requests) for c in CONCURRENCY]
            burst_result = burst(url, files)
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(
        f"run: {args.run or 'untrained demo preset'}; {len(files)} images; {args.threads} torch threads; CPU"
    )
    print(f"offline generate_batch at batch 16: {offline_rate:.2f} reports/s")
    print(
        f"{'concurrency':>11} {'requests':>8} {'reports/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6} {'batch':>6}"
    )
    for level in levels:
        print(f"{level['concurrency']:>11} {level['requests']:>8} {level['reports_per_s']:>10.2f} "
              f"{level['p50_ms']:>8.0f} {level['p95_ms']:>8.0f} {level['errors']:>6} {level['mean_batch']:>6.1f}")  # fmt: skip
    ratio = levels[-1]["reports_per_s"] / offline_rate
    errors = sum(level["errors"] for level in levels)
    print(
        f"served at concurrency 16 / offline: {ratio:.2f} (target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
    )
    print(f"errors: {errors} (target 0: {'met' if errors == 0 else 'NOT met'})")
    print(f"burst of {burst_result['requests']} with {burst_result['corrupt']} corrupt files: "
          f"{'4xx for exactly the corrupt ones, 200 for the rest' if burst_result['exact'] else 'NOT exact: ' + str(burst_result['statuses'])}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"offline_reports_per_s": offline_rate, "levels": levels,
                                               "ratio_c16_offline": ratio, "burst": burst_result}, indent=2))  # fmt: skip
    return 0 if ratio >= 0.8 and errors == 0 and burst_result["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
