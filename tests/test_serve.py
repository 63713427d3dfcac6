"""`leadrrg serve` against a live server on 127.0.0.1 (a free port, a tiny run): reports, evidence, limits, 4xx
JSON errors for every bad input, dynamic batching, and the 429 of a full queue."""

from __future__ import annotations

import asyncio
import http.client
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import leadrrg  # noqa: E402
from leadrrg.serve.app import BackgroundServer, create_app, is_loopback  # noqa: E402
from leadrrg.serve.batcher import Batcher, QueueFull  # noqa: E402
from leadrrg.serve.client import multipart_body, post_report, request  # noqa: E402
from leadrrg.serve.settings import ServeConfig  # noqa: E402
from tests.fixtures_data import make_jsonl, write_png  # noqa: E402
from tests.test_generate_cli import write_tiny_run  # noqa: E402
from tests.test_model_helpers import EXPERTS  # noqa: E402

LIMIT_BYTES = 300_000


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    data = make_jsonl(tmp_path_factory.mktemp("data"), counts={"train": 2, "test": 1}, views=1)
    run = write_tiny_run(tmp_path_factory.mktemp("run"), data, max_new_tokens=6)
    return leadrrg.load(run, device="cpu")


@pytest.fixture(scope="module")
def server(generator):
    settings = ServeConfig(max_batch=8, max_wait_ms=20, max_request_bytes=LIMIT_BYTES, max_pixels=1_000_000)
    app = create_app(generator, settings)
    with BackgroundServer(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> bytes:
    return write_png(tmp_path_factory.mktemp("img") / "frontal.png", seed=3).read_bytes()


def test_health_model_page_and_docs(server):
    url, _ = server
    assert request(url + "/healthz") == (200, {"status": "ok"})
    status, info = request(url + "/v1/model")
    assert status == 200 and info["experts"] == EXPERTS and info["max_views"] == 2
    assert info["versions"]["leadrrg"] == leadrrg.__version__ and info["service"]["max_batch"] == 8
    for path in ("/", "/docs", "/static/app.js", "/static/style.css"):
        status, text = request(url + path)
        assert status == 200 and "https://" not in text and "cdn" not in text.lower()  # works offline
    status, spec = request(url + "/openapi.json")
    assert status == 200 and "/v1/reports" in spec["paths"]


def test_a_report_with_and_without_evidence(server, png, generator):
    url, _ = server
    status, body = post_report(url, [("frontal.png", png)])
    keys = {
        "report",
        "report_display",
        "findings",
        "expert_probs",
        "thresholds",
        "contradictions",
        "hedge_floors",
        "expert_attributes",
        "views",
    }
    assert status == 200 and set(body) == keys
    assert body["report"] == generator.generate(io.BytesIO(png).getvalue()).report  # the API's report
    status, body = post_report(url, [("a.png", png), ("b.png", png)], evidence=True)
    assert status == 200 and body["views"] == 2
    tokens = body["evidence"]["tokens"]
    assert tokens and all(len(t["gates"]) == 2 and len(t["experts"]) == 3 for t in tokens)
    status, body = post_report(url, [("x.bin", png)], evidence="full")  # content decides, not the name
    assert status == 200 and "full" in body["evidence"]


def test_dicom_upload_and_previews(server, tmp_path):
    import numpy as np

    from tests.test_images import write_dicom

    url, _ = server
    stored = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 7) % 4096
    dicom = write_dicom(tmp_path / "scan", stored).read_bytes()  # no suffix: recognised by content
    status, body = post_report(url, [("scan", dicom)])
    assert status == 200 and "previews" not in body
    data, kind = multipart_body([("scan", dicom)], {"preview": "true"})
    status, body = request(url + "/v1/reports", "POST", data, {"Content-Type": kind})
    assert status == 200 and body["previews"][0].startswith("data:image/png;base64,")


def _bomb() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (1500, 1000)).save(out, format="PNG")  # 1.5M pixels, a few hundred bytes
    return out.getvalue()


def test_bad_input_gets_a_4xx_json_error_naming_it(server, png):
    url, _ = server
    cases = [
        ([("report.pdf", b"%PDF-1.4 not an image")], 415, "not a PNG, JPEG or DICOM"),
        ([("cut.png", png[:100])], 400, "cut.png"),
        ([("scan.dcm", b"\0" * 128 + b"DICM" + b"\0" * 10)], 400, "scan.dcm"),
        ([("bomb.png", _bomb())], 413, "over the limit"),
        ([("a.png", png)] * 3, 400, "at most 2 view"),
        ([], 400, "no `images` file"),
    ]
    for files, status, words in cases:
        got, body = post_report(url, files)
        assert got == status and words in body["error"], (files[:1], got, body)
    status, body = request(url + "/v1/reports", "POST", b"{}", {"Content-Type": "application/json"})
    assert status == 415 and "multipart" in body["error"]
    data, kind = multipart_body([], {"images": "/etc/passwd"})  # a path as text is refused, never opened
    status, body = request(url + "/v1/reports", "POST", data, {"Content-Type": kind})
    assert status == 400 and "reads no paths" in body["error"]
    data, kind = multipart_body([("a.png", png)], {"evidence": "maybe"})
    assert request(url + "/v1/reports", "POST", data, {"Content-Type": kind})[0] == 400
    status, body = request(
        url + "/v1/reports", "POST", b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}
    )
    assert 400 <= status < 500 and "error" in body
    assert request(url + "/v1/nothing")[0] == 404


def test_request_size_limit_by_header_and_by_stream(server):
    url, _ = server
    data, kind = multipart_body([("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * LIMIT_BYTES)])
    status, body = request(url + "/v1/reports", "POST", data, {"Content-Type": kind})
    assert status == 413 and "limit" in body["error"]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)  # chunked: no Content-Length
    chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
    connection.request(
        "POST", "/v1/reports", body=chunks, headers={"Content-Type": kind}, encode_chunked=True
    )
    response = connection.getresponse()
    assert response.status == 413 and b"limit" in response.read()
    connection.close()


def test_a_burst_is_batched_and_only_the_bad_files_fail(server, png):
    url, app = server
    batcher = app.app.state.batcher
    batches_before, studies_before = batcher.batches, batcher.studies
    bad = {3, 7, 12}
    files = [[("bad.png", b"\x89PNG\r\n\x1a\ngarbage")] if i in bad else [("ok.png", png)] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda f: post_report(url, f, timeout=60), files))
    statuses = [status for status, _ in results]
    assert [i for i, s in enumerate(statuses) if s != 200] == sorted(bad)
    assert all(400 <= statuses[i] < 500 and "bad.png" in results[i][1]["error"] for i in bad)
    reports = {body["report"] for status, body in results if status == 200}
    assert len(reports) == 1  # same image, same report, whatever batch it was decoded in
    served = batcher.studies - studies_before
    assert served == 13 and batcher.batches - batches_before < served  # some requests shared a batch


def test_a_full_queue_refuses_at_once():
    release, decoding = threading.Event(), threading.Event()

    def slow_decode(images, view_mask, evidence):
        decoding.set()
        release.wait(10)
        return [type("R", (), {"evidence": None})() for _ in range(images.shape[0])]

    async def scenario():
        import torch

        batcher = Batcher(slow_decode, max_batch=1, max_wait_s=0, max_queue=2)
        await batcher.start()
        study = (torch.zeros(1, 1, 4, 4), torch.ones(1, dtype=torch.bool))
        running = asyncio.create_task(batcher.submit(*study))
        while not decoding.is_set():  # the first study is being decoded; the queue is empty again
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(batcher.submit(*study)) for _ in range(2)]
        await asyncio.sleep(0.05)  # both wait in the queue, which holds 2
        with pytest.raises(QueueFull):
            await batcher.submit(*study)
        release.set()
        await asyncio.gather(running, *waiting)
        await batcher.stop()
        return batcher.studies

    assert asyncio.run(scenario()) == 3


def test_loopback_default_and_settings_validation():
    assert ServeConfig().host == "127.0.0.1" and is_loopback("127.0.0.1") and not is_loopback("0.0.0.0")
    from leadrrg.errors import LeadrrgError

    with pytest.raises(LeadrrgError, match="max_queue"):
        ServeConfig(max_queue=0)


def test_serve_command_refuses_model_overrides(tmp_path, capsys):
    from leadrrg.cli import main

    assert main(["serve", "--run", str(tmp_path), "--set", "model.max_views=1"]) == 2
    assert "only decode.*" in capsys.readouterr().err


def test_page_files_ship_in_the_package():
    from leadrrg.serve.assets import PAGE_FILES

    root = Path(leadrrg.__file__).parent / "serve" / "page"
    assert {p.name for p in root.iterdir()} >= set(PAGE_FILES)


def test_the_serve_command_listens_on_loopback(generator, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    from leadrrg.runs.files import save_model_weights
    from leadrrg.train.checkpoint import init_run_dir

    init_run_dir(run_dir, generator.config, generator.tokenizer)
    save_model_weights(generator.model, run_dir / "model.safetensors")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "leadrrg",
        "serve",
        "--run",
        str(run_dir),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    server = subprocess.Popen(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = request(f"http://127.0.0.1:{port}/healthz", timeout=2)[0]
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    assert f"http://127.0.0.1:{port}/" in output and "not for clinical use" in output


def test_the_serve_flags_default_to_serve_config():
    import argparse

    from leadrrg.commands.serve import add_arguments, serve_config
    from leadrrg.errors import LeadrrgError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert serve_config(parser.parse_args(["--run", "r"])) == ServeConfig()
    args = parser.parse_args(["--run", "r", "--max-wait-ms", "2.5", "--max-request-mb", "0.5", "--port", "9"])
    assert serve_config(args) == ServeConfig(max_wait_ms=2.5, max_request_bytes=2**19, port=9)
    with pytest.raises(LeadrrgError, match="max_queue"):
        serve_config(parser.parse_args(["--run", "r", "--max-queue", "0"]))
