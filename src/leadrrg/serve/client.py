"""A small standard-library client for the service (tests, benchmarks, scripts): no extra dependency.

status, body = post_report("http://127.0.0.1:8000", [("frontal.png", png_bytes)], evidence=True)
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit


def multipart_body(
    files: Sequence[tuple[str, bytes]], fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """(file name, bytes) pairs as repeated `images` parts, plus text fields -> (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout=60,
) -> tuple[int, Any]:
    """-> (status, parsed JSON body or text)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path or "/", body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("content-type", "")
    finally:
        connection.close()
    text = data.decode("utf-8", errors="replace")
    return response.status, json.loads(text) if kind.startswith("application/json") else text


def post_report(
    base_url: str, files: Sequence[tuple[str, bytes]], evidence: bool | str = False, timeout: float = 60
) -> tuple[int, Any]:
    """POST one study's images to /v1/reports -> (status, JSON)."""
    fields = {"evidence": "full" if evidence == "full" else "true"} if evidence else {}
    body, content_type = multipart_body(files, fields)
    return request(
        base_url.rstrip("/") + "/v1/reports", "POST", body, {"Content-Type": content_type}, timeout=timeout
    )
