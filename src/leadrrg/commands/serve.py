"""`leadrrg serve`: the HTTP service and its web page for a trained run (needs the `serve` extra).

    leadrrg serve --run RUN [--device DEVICE] [--host HOST] [--port PORT] [--max-batch N] [--max-wait-ms MS]
                  [--max-queue N] [--max-request-mb MB] [--max-pixels N] [--limit-concurrency N]
                  [--timeout-keep-alive-s S] [--timeout-head-s S] [--timeout-body-s S] [--allowed-hosts NAMES]
                  [--set decode.KEY=VALUE ...]

Each service flag is a field of `leadrrg.serve.settings.ServeConfig` (--max-batch sets `max_batch`;
--max-request-mb sets `max_request_bytes` in MiB), which holds its default (shown by --help) and checks its value.
Listens on loopback unless --host says otherwise (there is no authentication); the port is bound before the model
is loaded, so a busy port or a bad --host is one error line (exit 2) at once. See `leadrrg.serve.app` for the
endpoints and limits, `leadrrg.serve.guard` for the Host, Origin and slow-client checks. Research use only; not for
clinical use.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

from leadrrg.commands import add_overrides_argument, add_run_argument, check_run_dir, resolve_device
from leadrrg.errors import LeadrrgError
from leadrrg.runs.provenance import BASE_PATH_OVERRIDES
from leadrrg.serve.settings import ServeConfig

MIB = 2**20
# The help of each ServeConfig field's flag: `--max-batch` for `max_batch`, except `--max-request-mb` (in MiB).
FLAG_HELP = {
    "host": "address to listen on (default: loopback only)",
    "port": "TCP port (default: %(default)s)",
    "max_batch": "studies decoded together",
    "max_wait_ms": "how long a request waits for company",
    "max_queue": "waiting studies before answering 429",
    "max_request_bytes": "413 above this",
    "max_pixels": "per image; 413 above",
    "limit_concurrency": "open connections at once; more are answered 503",
    "timeout_keep_alive_s": "seconds an idle connection is kept between requests",
    "timeout_head_s": "seconds a request's head may take to arrive (slow clients are dropped)",
    "timeout_body_s": "seconds a request's body may take to arrive (408 after)",
    "allowed_hosts": "extra Host names to answer, comma-separated (default: loopback names only; * for any)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "trained run directory (written by leadrrg train)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    defaults, types = ServeConfig(), get_type_hints(ServeConfig)
    for field in fields(ServeConfig):
        default, help_text = getattr(defaults, field.name), FLAG_HELP[field.name]
        if field.name == "max_request_bytes":
            parser.add_argument("--max-request-mb", type=float, default=default / MIB, help=help_text)
        else:
            flag = "--" + field.name.replace("_", "-")
            parser.add_argument(flag, type=types[field.name], default=default, help=help_text)
    add_overrides_argument(
        parser, "typed override of a decode.* field (repeatable), e.g. decode.strategy=beam"
    )


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """The service's settings from the parsed flags; ServeConfig checks them."""
    values = {
        field.name: getattr(args, field.name)
        for field in fields(ServeConfig)
        if field.name != "max_request_bytes"
    }
    if not math.isfinite(args.max_request_mb) or args.max_request_mb <= 0:
        raise LeadrrgError(f"--max-request-mb is {args.max_request_mb!r}; expected a finite positive number")
    return ServeConfig(**values, max_request_bytes=max(1, int(args.max_request_mb * MIB)))


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LeadrrgError("leadrrg serve needs FastAPI and uvicorn: pip install 'leadrrg[serve]'") from None
    # torch and FastAPI: imported here, not by `leadrrg --help`
    from leadrrg.inference.api import load
    from leadrrg.runs.files import check_trained_overrides
    from leadrrg.serve.app import serve
    from leadrrg.serve.settings import bind_socket

    check_trained_overrides(args.overrides, ("decode.", *BASE_PATH_OVERRIDES), "when serving")
    settings = serve_config(args)
    check_run_dir(Path(args.run))
    sock = bind_socket(settings)  # before the model: a busy port fails in a second, not after loading
    try:
        generator = load(args.run, device=resolve_device(args.device), overrides=args.overrides)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    print(
        f"leadrrg serve: {args.run} on http://{settings.host}:{port}/ (research use only; not for clinical use)"
    )
    # uvicorn logs its start and each request at info; leadrrg's --log-level (default warning) lowers or raises it.
    serve(generator, settings, log_level="info" if args.log_level == "warning" else args.log_level, sock=sock)
    return 0
