"""The service against the audit's security cases (reliability.md, Security 1-7, and four defects): bombs, slow
clients, DNS rebinding, cross-site POSTs, the explain page's inlined JSON. Servers listen on 127.0.0.1 (a free
port) with a stub model and short timeouts; every case is bounded in size and time."""

from __future__ import annotations

import json
import logging
import socket
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch  # noqa: E402

from leadrrg.serve.app import BackgroundServer, create_app  # noqa: E402
from leadrrg.serve.client import multipart_body, post_report, request  # noqa: E402
from leadrrg.serve.guard import RepeatFilter, allowed_hosts, quiet_repeats  # noqa: E402
from leadrrg.serve.settings import ServeConfig  # noqa: E402
from tests.fixtures_data import write_png  # noqa: E402
from tests.test_images_security import _png_claiming, deflate_bomb, rle_frames  # noqa: E402


class StubGenerator:
    """What the service needs of a ReportGenerator, without a model; counts the studies it decodes."""

    max_views = 2

    def __init__(self):
        self.decoded = 0

    def summary(self) -> dict:
        return {"run": "stub"}

    def prepare_arrays(self, views):
        return torch.zeros(2, 1, 4, 4), torch.tensor([True] + [False])

    def decode(self, images, view_mask, priors, evidence):
        self.decoded += images.shape[0]
        result = type("Result", (), {"evidence": None, "to_dict": lambda self: {"report": "ok"}})
        return [result() for _ in range(images.shape[0])]


SETTINGS = ServeConfig(
    max_pixels=1_000_000,
    timeout_head_s=0.5,
    timeout_body_s=0.5,
    limit_concurrency=8,
    max_request_bytes=2_000_000,
)


@pytest.fixture(scope="module")
def served():
    generator = StubGenerator()
    with BackgroundServer(create_app(generator, SETTINGS)) as url:
        yield url, generator


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> bytes:
    return write_png(tmp_path_factory.mktemp("img") / "frontal.png", seed=3).read_bytes()


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------------
# 1-2. Bombs and malformed headers over HTTP


def test_bombs_are_413_and_a_malformed_header_400(served, tmp_path: Path) -> None:
    url, _ = served
    bomb = deflate_bomb(tmp_path / "deflate_64m.dcm", 64 << 20).read_bytes()
    started = time.monotonic()
    status, body = post_report(url, [("deflate.dcm", bomb)])
    assert status == 413 and "deflated DICOM" in body["error"] and "deflate.dcm" in body["error"], body
    assert time.monotonic() - started < 5  # before: the whole stream inflated, twice
    rle = rle_frames(tmp_path / "rle.dcm", frames=40, rows=1000, columns=1000).read_bytes()
    assert post_report(url, [("rle.dcm", rle)])[0] == 200  # 40 frames of 1M pixels, limit 1M: frame 0 only
    status, body = post_report(url, [("claim.png", _png_claiming(100_000, 100_000))])
    assert status == 413 and "claim.png" in body["error"], body  # before: 400
    from tests.test_images import halves, write_dicom

    raw = write_dicom(tmp_path / "frames_abc.dcm", halves(1, 2)).read_bytes()
    rows_at = raw.index(b"\x28\x00\x10\x00US")
    raw = raw[:rows_at] + b"\x28\x00\x08\x00IS\x02\x00ab" + raw[rows_at:]
    status, body = post_report(url, [("frames_abc.dcm", raw)])
    assert status == 400 and "frames_abc.dcm" in body["error"] and "NumberOfFrames 'ab'" in body["error"], (
        body
    )


# --------------------------------------------------------------------------------------------------
# 3-4. Slow clients


def test_a_half_sent_head_is_dropped_and_a_slow_body_is_408(served) -> None:
    url, _ = served
    with raw_connection(url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
        started = time.monotonic()
        assert read_all(sock) == b""  # closed by the server
        assert time.monotonic() - started < 3  # timeout_head_s = 0.5 (before: open after 75 s)
    with raw_connection(url) as sock:
        sock.sendall(
            b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 1000\r\n\r\n--x\r\n"
        )
        started = time.monotonic()
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within" in answer, answer[:200]
        assert time.monotonic() - started < 3


def test_connections_over_the_cap_are_refused_at_once_and_the_service_recovers(served) -> None:
    url, _ = served
    held = [raw_connection(url) for _ in range(SETTINGS.limit_concurrency)]
    try:
        time.sleep(0.1)
        with raw_connection(url) as extra:
            assert read_all(extra).startswith(b"HTTP/1.1 503")  # answered and closed, not held
        time.sleep(SETTINGS.timeout_head_s + 0.5)  # the idle ones are dropped
        started = time.monotonic()
        assert request(url + "/healthz", timeout=5) == (200, {"status": "ok"})
        assert time.monotonic() - started < 1
        assert all(read_all(sock) == b"" for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_a_repeated_log_line_is_written_once_per_interval(caplog) -> None:
    import asyncio

    repeat = quiet_repeats(("asyncio",), interval=10.0)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(5000):  # one per refused accept under EMFILE (before: 122,077 lines in 12 s)
                loop.call_exception_handler(
                    {
                        "message": "socket.accept() out of system resource",
                        "exception": OSError(24, "Too many"),
                    }
                )
        assert len([r for r in caplog.records if "out of system resource" in r.getMessage()]) == 1
    finally:
        loop.close()
        logging.getLogger("asyncio").removeFilter(repeat)
    now = [0.0]
    alone = RepeatFilter(interval=10.0, clock=lambda: now[0])
    record = lambda: logging.LogRecord("x", logging.ERROR, "", 0, "same", None, None)  # noqa: E731
    assert alone.filter(record()) and not alone.filter(record()) and not alone.filter(record())
    now[0] = 11.0
    later = record()
    assert alone.filter(later) and "2 more like this" in later.getMessage()


# --------------------------------------------------------------------------------------------------
# 5-6. Host and Origin


def test_a_foreign_host_is_refused_and_loopback_names_are_answered(served) -> None:
    url, _ = served
    port = url.rsplit(":", 1)[1]
    status, body = request(url + "/v1/model", headers={"Host": f"attacker.example:{port}"})
    assert status == 421 and "attacker.example" in body["error"] and "--allowed-hosts" in body["error"]
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        "localhost",
        "LOCALHOST.",
        f"[::1]:{port}",
        "127.0.0.2",
    ):
        assert request(url + "/v1/model", headers={"Host": host})[0] == 200, host


def test_the_host_allow_list() -> None:
    assert allowed_hosts(ServeConfig(host="0.0.0.0")) is None  # exposed on purpose: any Host
    assert allowed_hosts(ServeConfig(allowed_hosts="*")) is None
    hosts = allowed_hosts(ServeConfig(allowed_hosts="xray.lan, Other.Lan"))
    assert {"xray.lan", "other.lan", "localhost", "127.0.0.1"} <= hosts
    app = create_app(StubGenerator(), ServeConfig(allowed_hosts="xray.lan", timeout_head_s=1))
    with BackgroundServer(app) as url:
        assert request(url + "/healthz", headers={"Host": "xray.lan:8000"})[0] == 200
        assert request(url + "/healthz", headers={"Host": "evil.lan"})[0] == 421


def test_cross_site_posts_are_refused_before_the_body_is_read(served, png) -> None:
    url, generator = served
    data, kind = multipart_body([("a.png", png)])
    before = generator.decoded
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        status, body = request(url + "/v1/reports", "POST", data, {"Content-Type": kind, **headers})
        assert status == 403 and "cross-site" in body["error"], (headers, status, body)
    assert generator.decoded == before
    with raw_connection(url) as sock:  # a head that announces a body it never sends: refused at once
        sock.sendall(
            b"POST /v1/reports HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
        )
        assert read_all(sock).startswith(b"HTTP/1.1 403")
    port = url.rsplit(":", 1)[1]
    same = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert request(url + "/v1/reports", "POST", data, {"Content-Type": kind, **same})[0] == 200
    assert request(url + "/v1/reports", "POST", data, {"Content-Type": kind})[0] == 200  # a script: no Origin
    assert generator.decoded == before + 2


def test_an_upper_case_multipart_content_type_is_accepted(served, png) -> None:
    url, _ = served
    data, kind = multipart_body([("a.png", png)])
    kind = kind.replace("multipart/form-data", "Multipart/Form-Data")
    assert request(url + "/v1/reports", "POST", data, {"Content-Type": kind})[0] == 200  # before: 415


# --------------------------------------------------------------------------------------------------
# 7. The explain page


class ScriptCounter(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.texts = 0, []

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"

    def handle_data(self, data):
        if data.startswith("window.LEADRRG_EMBEDDED = "):
            self.texts.append(data)


def test_a_file_name_with_a_comment_and_a_script_tag_cannot_break_the_explain_page() -> None:
    from leadrrg.serve.render import explain_html

    name = "<!--<script>\"'&x.png"
    result = {"report": "heart </script><!-- normal \u2028 & <b>", "evidence": None}
    pages = {}
    for view in ("plain.png", name):
        page = explain_html(result, [(view, b"\x89PNG")], "run")
        parser = ScriptCounter()
        parser.feed(page)
        (text,) = parser.texts
        pages[view] = parser.scripts
        data = text.split("window.LEADRRG_EMBEDDED = ", 1)[1].rsplit(";", 1)[0]
        assert not set(data) & {"<", ">", "&", "\u2028", "\u2029"}
        embedded = json.loads(data)
        assert embedded["images"][0]["name"] == view and embedded["result"] == result
    assert pages[name] == pages["plain.png"]  # no script element ended or opened by the name


# --------------------------------------------------------------------------------------------------
# Settings and the command


@pytest.mark.parametrize("field", ["max_wait_ms", "timeout_head_s", "timeout_body_s", "timeout_keep_alive_s"])
def test_non_finite_settings_are_refused(field) -> None:
    from leadrrg.errors import LeadrrgError

    for value in (float("inf"), float("nan")):
        with pytest.raises(LeadrrgError, match=f"{field} is {value!r}; expected a finite number"):
            ServeConfig(**{field: value})


def test_the_command_refuses_nan_and_fails_fast_on_a_busy_port(tmp_path, capsys, monkeypatch) -> None:
    import argparse

    import leadrrg.commands.serve as command
    import leadrrg.inference.api as api
    from leadrrg.cli import main

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--run", "r", "--timeout-head-s", "3", "--limit-concurrency", "9"])
    assert command.serve_config(args) == ServeConfig(timeout_head_s=3, limit_concurrency=9)
    assert main(["serve", "--run", str(tmp_path), "--max-request-mb", "nan"]) == 2
    assert "--max-request-mb is nan" in capsys.readouterr().err

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the port was bound")

    monkeypatch.setattr(command, "check_run_dir", lambda path: None)
    monkeypatch.setattr(api, "load", never)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--run", str(tmp_path), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "Traceback" not in err
    assert main(["serve", "--run", str(tmp_path), "--host", "999.1.1.1"]) == 2
    assert "--host '999.1.1.1'" in capsys.readouterr().err
