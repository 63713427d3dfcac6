"""What the service checks before a route reads anything, and how it treats slow clients.

- Host (DNS rebinding): a service bound to loopback answers only requests whose Host is a loopback name or
  address (localhost, 127.0.0.0/8, ::1, with or without a port), the bound host, or a name of
  `ServeConfig.allowed_hosts` ("*" turns the check off); anything else is 421 before the request is routed.
- Origin (blind cross-site POSTs): a POST whose Origin is not the service's own (scheme, Host) or whose
  Sec-Fetch-Site is cross-site or same-site is 403, before its body is read. Clients without these headers
  (curl, scripts) are not browsers and pass.
- Body: a Content-Length over `max_request_bytes` is 413 at once, a body that streams past it 413, and a body
  still arriving after `timeout_body_s` 408 (the connection is then closed).
- Slow clients (`SlowClientProtocol`, uvicorn's h11 protocol): a request head (request line and headers) that
  has not arrived `timeout_head_s` after the connection opened, or after the last response, closes the
  connection; beyond `limit_concurrency` open connections a new one is answered 503 and closed at once.
- Logging: the same message from asyncio or uvicorn (e.g. "socket.accept() out of system resource", once per
  refused accept) is written at most once per `RepeatFilter.interval` seconds, with a count of those dropped.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from leadrrg.serve.settings import ServeConfig

LOOPBACK = ("127.0.0.1", "::1", "localhost")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


def is_loopback(host: str) -> bool:
    name = host.strip().lower().strip("[]").rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a Host header value: `127.0.0.1:8000` -> 127.0.0.1, `[::1]:8000` -> ::1, `LocalHost.` ->
    localhost."""
    value = value.strip().lower()
    if value.startswith("["):
        name = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value  # a bare name, or a bare IPv6 address
    return name.rstrip(".")


def allowed_hosts(settings: ServeConfig) -> frozenset[str] | None:
    """The Host names answered, or None for any (bound beyond loopback without an allow-list, or "*")."""
    extra = settings.extra_hosts()
    if "*" in extra or (not extra and not is_loopback(settings.host)):
        return None
    return frozenset({*LOOPBACK, host_name(settings.host), *extra})


class Guard:
    """ASGI middleware: the Host, Origin and body checks above. `.app` is the FastAPI app."""

    def __init__(self, app, settings: ServeConfig):
        self.app, self.settings = app, settings
        self.hosts = allowed_hosts(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name: value.decode("latin-1") for name, value in scope.get("headers") or []}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            response = JSONResponse({"error": message}, status_code=status, headers={"Connection": "close"})
            return await response(scope, receive, send)
        return await self.app(lower_media_type(scope), self.limited(receive), send)

    def refusal(self, scope, headers: dict[bytes, str]) -> tuple[int, str] | None:
        host = headers.get(b"host")
        if self.hosts is not None and host is not None and not self.host_ok(host):
            return 421, (
                f"this service answers requests for {', '.join(sorted(self.hosts))} only, not Host {host[:80]!r} "
                "(DNS rebinding); add the name to --allowed-hosts to serve it"
            )
        if scope.get("method", "GET") not in SAFE_METHODS:
            site = headers.get(b"sec-fetch-site", "").strip().lower()
            origin = headers.get(b"origin")
            if site in ("cross-site", "same-site") or (
                origin is not None and not same_origin(origin, scope.get("scheme", "http"), host, scope)
            ):
                return 403, (
                    f"cross-site {scope.get('method')} refused (Origin {str(origin)[:80]!r}, Sec-Fetch-Site "
                    f"{site or 'absent'!r}); expected a request from this service's own page or a script"
                )
        length = headers.get(b"content-length")
        limit = self.settings.max_request_bytes
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            return 413, f"the request is {length[:40]} bytes; the limit is {limit}"
        return None

    def host_ok(self, host: str) -> bool:
        name = host_name(host)
        return name in self.hosts or is_loopback(name)

    def limited(self, receive):
        """`receive` that raises BodyTooLarge past the byte limit and BodyTimeout past the time limit."""
        received, done = 0, False
        deadline = time.monotonic() + self.settings.timeout_body_s
        max_bytes = self.settings.max_request_bytes

        async def limited_receive():
            nonlocal received, done
            if done:  # the body is complete: e.g. waiting for a disconnect, not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > max_bytes:
                    raise BodyTooLarge()
            else:
                done = True
            return message

        return limited_receive


def lower_media_type(scope):
    """`scope` with its Content-Type's media type in lower case (media types ignore case; Starlette's form parser
    does not), its parameters (the boundary) untouched."""
    headers = scope.get("headers") or []
    if not any(name == b"content-type" for name, _ in headers):
        return scope
    lowered = []
    for name, value in headers:
        if name == b"content-type":
            media, sep, params = value.partition(b";")
            value = media.strip().lower() + sep + params
        lowered.append((name, value))
    return {**scope, "headers": lowered}


def same_origin(origin: str, scheme: str, host: str | None, scope) -> bool:
    """Whether a browser's Origin header names this service as the request reached it (scheme, name, port)."""
    parts = urlsplit(origin.strip().lower())
    default = {"http": 80, "https": 443}
    try:
        origin_port = parts.port or default.get(parts.scheme)
    except ValueError:
        return False
    if host is None:
        server = scope.get("server") or ("", None)
        name, port = str(server[0]).lower(), server[1]
    else:
        name = host_name(host)
        tail = host.strip().rpartition("]")[2] if host.strip().startswith("[") else host.strip()
        port_text = tail.rpartition(":")[2] if tail.count(":") == 1 else ""
        port = int(port_text) if port_text.isdigit() else default.get(scheme)
    return parts.scheme == scheme and (parts.hostname or "").rstrip(".") == name and origin_port == port


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol with a head timeout and a cap on open connections (set by `for_settings`)."""

    timeout_head_s = 10.0
    max_connections = 512

    @classmethod
    def for_settings(cls, settings: ServeConfig) -> type[SlowClientProtocol]:
        values = {"timeout_head_s": settings.timeout_head_s, "max_connections": settings.limit_concurrency}
        return type("SlowClientProtocol", (cls,), values)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_timer = None
        if len(self.connections) > self.max_connections:
            transport.write(BUSY)
            transport.close()
            return
        self._wait_for_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_head()

    def connection_lost(self, exc) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.timeout_head_s, self._head_timeout, self.cycle)

    def _head_timeout(self, cycle) -> None:
        """No new request since the timer was set (same cycle): the head never arrived."""
        self.head_timer = None
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()


class RepeatFilter(logging.Filter):
    """Lets a message through at most once per `interval` seconds, then notes how many were dropped."""

    def __init__(self, interval: float = 10.0, clock=time.monotonic):
        super().__init__()
        self.interval, self.clock = interval, clock
        self.seen: dict[str, list] = {}  # message -> [last time let through, dropped since]

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{str(record.msg)[:200]}"
        now = self.clock()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.interval:
            last[1] += 1
            return False
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} ({last[1]} more like this in the last {now - last[0]:.0f} s not logged)"
            )
        if len(self.seen) > 1000:
            self.seen.clear()
        self.seen[key] = [now, 0]
        return True


def quiet_repeats(loggers=("asyncio", "uvicorn.error"), interval: float = 10.0) -> RepeatFilter:
    """Install one RepeatFilter on the loggers that slow or hostile clients can make write a line each time."""
    repeat = RepeatFilter(interval)
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in logger.filters):
            logger.addFilter(repeat)
    return repeat
