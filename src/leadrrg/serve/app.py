"""The HTTP service (`leadrrg serve`): FastAPI over the same `ReportGenerator` a notebook uses.

    POST /v1/reports   multipart: file field `images` (1..max_views, PNG / JPEG / DICOM), optional form fields
                       `evidence` = true | full, `preview` = true, `expert_probs` = a what-if, JSON {name: p} for
                       some experts (merged with the model's own p)  ->  {"report", "report_display", "findings",
                       "expert_probs", "thresholds", "contradictions", "hedge_floors", "expert_attributes", "views"[, "what_if"]
                       [, "evidence"][, "previews": PNG data URIs of the views as the model read them]}
    GET  /healthz      {"status": "ok"}
    GET  /v1/model     what is loaded: run name, model and decode settings, versions, the service's limits
    GET  /             the web page (`page/`), which needs nothing from the network
    GET  /docs         the API's description, rendered locally from /openapi.json
    GET  /examples/NAME example studies for the page (`page/examples/index.json` lists them)

Requests are batched dynamically (`leadrrg.serve.batcher`). Limits, each a 4xx JSON `{"error": "..."}` that
names the problem: a body over `max_request_bytes` (413), an image over `max_pixels` (413), more images than the
model's views (model.max_views; none is used) or none (400), a what-if naming an unknown expert (400), content that is not PNG / JPEG / DICOM whatever its file name (415), an unreadable
image (400), a full queue (429, with Retry-After). Clients upload bytes; the server never opens a path it is sent.
Before any route: a Host that is not this service's (421, DNS rebinding), a cross-site POST (403), a body too slow
to arrive (408) and slow or too many connections (`leadrrg.serve.guard`).
Unexpected failures answer 500 with a generic message and are logged; no traceback reaches a client.
"""

import asyncio
import logging
import socket
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from leadrrg import __version__
from leadrrg.errors import LeadrrgError
from leadrrg.inference.inputs import ImageTooLarge, UnsupportedImage, decode_bytes
from leadrrg.serve.assets import PAGE_FILES, example_bytes, example_files, page_text
from leadrrg.serve.batcher import Batcher, QueueFull
from leadrrg.serve.forms import RequestError, evidence_flag, upload_name, upload_schema, what_if
from leadrrg.serve.guard import (
    BodyTimeout,
    BodyTooLarge,
    Guard,
    SlowClientProtocol,
    is_loopback,
    quiet_repeats,
)
from leadrrg.serve.render import data_uri, preview_png
from leadrrg.serve.settings import ServeConfig, bind_socket

logger = logging.getLogger(__name__)

DECODE_SLOTS = 4  # uploads decoded at once


def create_app(generator, settings: ServeConfig | None = None):
    """The FastAPI app serving `generator` (a ReportGenerator)."""
    settings = settings or ServeConfig()
    service = ReportService(generator, settings)
    app = FastAPI(
        title="leadrrg",
        version=__version__,
        description="Chest X-ray reports with LEAD, and the evidence behind each word. Research use only; not "
        "for clinical use.",
        docs_url=None,  # FastAPI's docs page loads its scripts from a CDN; ours (/docs) is local
        redoc_url=None,
        lifespan=service.lifespan,
    )
    app.state.batcher = service.batcher
    app.state.generator = generator
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(BodyTooLarge, service.body_too_large)
    app.add_exception_handler(BodyTimeout, service.body_timeout)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.get("/healthz")(healthz)
    app.get("/v1/model")(service.model_info)
    app.post("/v1/reports", openapi_extra=upload_schema(generator.max_views))(service.reports)
    app.get("/", response_class=HTMLResponse, include_in_schema=False)(index)
    app.get("/docs", response_class=HTMLResponse, include_in_schema=False)(docs)
    app.get("/static/{name}", include_in_schema=False)(static)
    app.get("/examples/{name}", include_in_schema=False)(example)
    return Guard(app, settings)


class ReportService:
    """The routes that use the model: its generator, the service's settings and the batcher in front of it."""

    def __init__(self, generator, settings: ServeConfig):
        self.generator, self.settings = generator, settings
        self.batcher = Batcher(
            self._decode,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
        )
        # Decoding an upload can take a few hundred MB (a 25M-pixel DICOM in float64): a few at a time.
        self.decode_slots = asyncio.Semaphore(DECODE_SLOTS)

    def _decode(self, images, view_mask, evidence, what_ifs=None):
        """On the batcher's worker thread: with what-ifs, each merged into its study's own expert p first."""
        if what_ifs is None:
            return self.generator.decode(images, view_mask, None, evidence)
        rows = self.generator.expert_rows(what_ifs, images, view_mask)
        return self.generator.decode(images, view_mask, None, evidence, rows)

    def _what_if(self, value) -> dict[str, float] | None:
        """The form's `expert_probs` checked against this model's experts, or a RequestError (400)."""
        override = what_if(value)
        if override is None:
            return None
        try:
            return self.generator.check_expert_probs(override)
        except LeadrrgError as exc:
            raise RequestError(400, str(exc)) from None

    @asynccontextmanager
    async def lifespan(self, app):
        await self.batcher.start()
        yield
        await self.batcher.stop()

    async def body_too_large(self, request, exc):
        return error_response(
            413, f"the request body is over the limit of {self.settings.max_request_bytes} bytes"
        )

    async def body_timeout(self, request, exc):
        return error_response(
            408,
            f"the request body did not arrive within {self.settings.timeout_body_s:g} s; send it at once",
            headers={"Connection": "close"},
        )

    async def model_info(self) -> dict[str, Any]:
        info = self.generator.summary()
        batcher = self.batcher
        info["service"] = {**asdict(self.settings), "batches": batcher.batches, "studies": batcher.studies}
        info["notice"] = "research use only; not for clinical use"
        return info

    async def reports(self, request: Request) -> dict[str, Any]:
        """One study's report, the labeler's findings, the experts' probabilities and (when asked) evidence."""
        evidence, preview, overrides, contents = await self._read_upload(request)
        views = [await self._decode_upload(name, data) for name, data in contents]
        images, view_mask = await run_in_threadpool(self.generator.prepare_arrays, views)
        try:
            result = await self.batcher.submit(images, view_mask, evidence, overrides)
        except QueueFull as exc:
            return error_response(
                429, f"the server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}
            )
        out = result.to_dict()
        out["views"] = len(views)
        if overrides:
            out["what_if"] = overrides  # the p the decoder read in place of these experts' own
        if preview:  # what the model read, as small PNGs (the page shows DICOM uploads this way)
            out["previews"] = [data_uri(await run_in_threadpool(preview_png, view)) for view in views]
        return out

    async def _read_upload(self, request: Request) -> tuple[bool | str, bool, Any, list[tuple[str, bytes]]]:
        """The form's (evidence, preview, what-if or None, [(name for messages, bytes) per view]), or a
        RequestError."""
        max_views = self.generator.max_views
        content_type = request.headers.get("content-type", "").strip().lower()  # media types ignore case
        if not content_type.startswith("multipart/form-data"):
            raise RequestError(415, "expected a multipart/form-data upload with one `images` file per view")
        form = await request.form(max_files=max_views + 1, max_fields=8)
        try:
            evidence = evidence_flag(form.get("evidence"))
            preview = evidence_flag(form.get("preview")) is True
            overrides = self._what_if(form.get("expert_probs"))
            uploads = form.getlist("images")
            if not uploads:
                raise RequestError(
                    400, f"no `images` file in the upload; expected 1 to {max_views} PNG, JPEG or DICOM files"
                )
            if len(uploads) > max_views:
                raise RequestError(
                    400,
                    f"{len(uploads)} images uploaded but this model reads at most {max_views} "
                    f"{'view' if max_views == 1 else 'views'} per study (model.max_views), so none was used; "
                    f"send at most {max_views} of one study's views, frontal first",
                )
            contents = []
            for index, upload in enumerate(uploads, start=1):
                if isinstance(upload, str):
                    raise RequestError(
                        400,
                        f"images #{index} is a text field; upload the file's bytes (the server reads no paths)",
                    )
                contents.append((upload_name(upload, index), await upload.read()))
        finally:
            await form.close()
        return evidence, preview, overrides, contents

    async def _decode_upload(self, name: str, data: bytes):
        """One upload's bytes -> float32 (H, W) gray in [0, 1], or a RequestError (415, 413, 400)."""
        try:
            async with self.decode_slots:
                return await run_in_threadpool(decode_bytes, data, name, self.settings.max_pixels)
        except UnsupportedImage as exc:
            raise RequestError(415, str(exc)) from None
        except ImageTooLarge as exc:
            raise RequestError(413, str(exc)) from None
        except LeadrrgError as exc:
            raise RequestError(400, str(exc)) from None


# --------------------------------------------------------------------------------------------------
# Routes and error handlers that need no model


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _request_error(request, exc: RequestError):
    return error_response(exc.status, exc.message)


async def _http_error(request, exc: HTTPException):
    return error_response(exc.status_code, str(exc.detail))


async def _validation_error(request, exc):
    return error_response(400, f"invalid request: {exc.errors()}")


async def _unexpected_error(request, exc):
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error while writing the report (logged on the server)")


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def index() -> HTMLResponse:
    return HTMLResponse(page_text("index.html"))


async def docs() -> HTMLResponse:
    return HTMLResponse(page_text("docs.html"))


async def static(name: str) -> Response:
    if name not in PAGE_FILES or name.endswith(".html"):
        raise RequestError(404, f"no static file {name!r}")
    return Response(page_text(name), media_type=PAGE_FILES[name])


async def example(name: str) -> Response:
    """One of the page's example studies (`page/examples/`: index.json and small SynthCXR PNGs)."""
    files = example_files()
    if name not in files:
        raise RequestError(404, f"no example {name[:80]!r}; expected one of {sorted(files)}")
    return Response(example_bytes(name), media_type=files[name])


# --------------------------------------------------------------------------------------------------
# Running it


def serve(
    generator, settings: ServeConfig, log_level: str = "info", sock: socket.socket | None = None
) -> None:
    """Run the service in the foreground until interrupted, on `sock` (bound by `bind_socket` before the model
    was loaded) or a socket bound here."""
    if not is_loopback(settings.host):
        logger.warning(
            "listening on %s: reachable from other machines; leadrrg has no authentication (research use only)",
            settings.host,
        )
    sock = sock or bind_socket(settings)
    quiet_repeats()
    raise_open_file_limit(settings.limit_concurrency)
    uvicorn.Server(server_config(create_app(generator, settings), settings, log_level)).run(sockets=[sock])


def server_config(app, settings: ServeConfig, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for the service: the slow-client protocol and the service's timeouts."""
    return uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        http=SlowClientProtocol.for_settings(settings),
        timeout_keep_alive=settings.timeout_keep_alive_s,
        limit_concurrency=settings.limit_concurrency
        + 1,  # connections: SlowClientProtocol; this bounds tasks
    )


def raise_open_file_limit(connections: int) -> None:
    """Each connection is a file: raise the soft open-file limit (often 1024) toward the hard one, so that
    `limit_concurrency` connections cannot exhaust it; warn when it cannot."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256  # the model's files, the log, the batcher's threads
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        if target < wanted:
            logger.warning(
                "the open-file limit is %d (ulimit -n): under %d connections, new ones may be refused; "
                "raise it or lower --limit-concurrency",
                target,
                connections,
            )


class BackgroundServer:
    """A live server on loopback in a background thread (tests, benchmarks): `with BackgroundServer(app) as
    url: ...`. Binds port 0 (a free port) unless given one."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = self.socket.getsockname()[:2]
        settings = getattr(app, "settings", None) or ServeConfig()  # create_app's Guard holds them
        self.server = uvicorn.Server(server_config(app, settings, log_level))
        self.thread = threading.Thread(target=self._run, name="leadrrg-serve", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
