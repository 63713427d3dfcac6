"""`leadrrg serve`: the HTTP service and its web page for a trained run (needs the `serve` extra).

    leadrrg serve --run RUN [--host 127.0.0.1] [--port 8000] [--max-batch 16] [--max-wait-ms 10]

Listens on loopback unless --host says otherwise (there is no authentication). See `leadrrg.serve.app`
for the endpoints and limits. Research use only; not for clinical use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_trained_overrides
from leadrrg.errors import LeadrrgError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from leadrrg.serve.settings import ServeConfig

    defaults = ServeConfig()
    add_run_argument(parser, "trained run directory (written by leadrrg train)")
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default: loopback only)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help=f"TCP port (default: {defaults.port})"
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch, help="studies decoded together")
    parser.add_argument(
        "--max-wait-ms", type=float, default=defaults.max_wait_ms, help="how long a request waits for company"
    )
    parser.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting studies before answering 429"
    )
    parser.add_argument(
        "--max-request-mb", type=float, default=defaults.max_request_bytes / 2**20, help="413 above this"
    )
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="per image; 413 above")
    add_overrides_argument(
        parser, "typed override of a decode.* field (repeatable), e.g. decode.strategy=beam"
    )


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LeadrrgError("leadrrg serve needs FastAPI and uvicorn: pip install 'leadrrg[serve]'") from None
    from leadrrg.commands.generate import check_run_dir, resolve_device
    from leadrrg.inference.api import load
    from leadrrg.runs.provenance import BASE_PATH_OVERRIDES
    from leadrrg.serve.app import serve
    from leadrrg.serve.settings import ServeConfig

    check_trained_overrides(args.overrides, ("decode.", *BASE_PATH_OVERRIDES), "when serving")
    settings = ServeConfig(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_pixels=args.max_pixels,
    )
    check_run_dir(Path(args.run))
    generator = load(args.run, device=resolve_device(args.device), overrides=args.overrides)
    print(
        f"leadrrg serve: {args.run} on http://{args.host}:{args.port}/ (research use only; not for clinical use)"
    )
    # uvicorn logs its start and each request at info; leadrrg's --log-level (default warning) lowers or raises it.
    serve(generator, settings, log_level="info" if args.log_level == "warning" else args.log_level)
    return 0
