"""The service's settings (`leadrrg serve` flags), in a module light enough for the CLI parser (no torch), and the
listening socket, bound before the model is loaded (a busy port or a bad --host is one error line, exit 2)."""

import math
import socket
from dataclasses import dataclass

from leadrrg.errors import LeadrrgError

POSITIVE = ("max_batch", "max_queue", "max_request_bytes", "max_pixels", "limit_concurrency")
SECONDS = ("timeout_keep_alive_s", "timeout_head_s", "timeout_body_s")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    max_batch: int = 16  # studies decoded together
    max_wait_ms: float = 40.0  # how long the first waiting study waits for company (under concurrency only)
    max_queue: int = 64  # studies waiting beyond the running batch; more get 429
    max_request_bytes: int = 32 * 1024 * 1024  # 413 above this
    max_pixels: int = 25_000_000  # per image (decompression bombs); a 4300 x 4300 radiograph is 18.5M
    limit_concurrency: int = 512  # connections at once; more are answered 503 and closed at once
    timeout_keep_alive_s: float = 5.0  # an idle connection between requests is closed after this
    timeout_head_s: float = (
        10.0  # a request whose head (line and headers) takes longer is dropped (slowloris)
    )
    timeout_body_s: float = 60.0  # a request whose body takes longer to arrive is answered 408
    allowed_hosts: str = ""  # extra Host names (comma-separated) beside the loopback names; "*" allows any

    def __post_init__(self) -> None:
        for name in (*POSITIVE, *SECONDS, "max_wait_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise LeadrrgError(f"serve {name} is {value!r}; expected a finite number")
        for name in (*POSITIVE, *SECONDS):
            if getattr(self, name) <= 0:
                raise LeadrrgError(f"serve {name} is {getattr(self, name)!r}; expected a positive number")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise LeadrrgError(
                f"serve max_wait_ms is {self.max_wait_ms!r}; expected 0 to 60000 (milliseconds)"
            )
        if not 0 <= self.port <= 65535:
            raise LeadrrgError(f"port {self.port} is not a TCP port; expected 0-65535")
        if any(not name.strip() for name in self.allowed_hosts.split(",")) and self.allowed_hosts.strip():
            raise LeadrrgError(
                f"serve allowed_hosts is {self.allowed_hosts!r}; expected host names, comma-separated"
            )

    def extra_hosts(self) -> frozenset[str]:
        """The allow-list's names, lower case, without brackets or a trailing dot."""
        names = (name.strip().lower().strip("[]").rstrip(".") for name in self.allowed_hosts.split(","))
        return frozenset(name for name in names if name)


def bind_socket(settings: ServeConfig) -> socket.socket:
    """A socket bound to --host / --port (not yet listening), or a LeadrrgError naming the flag at fault."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (OSError, UnicodeError) as exc:
        raise LeadrrgError(
            f"--host {settings.host!r} is not an address this machine can listen on ({exc}); expected an IP "
            "address or host name such as 127.0.0.1"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise LeadrrgError(
            f"cannot listen on {settings.host}:{settings.port} (--host / --port): {exc.strerror or exc}; "
            "expected a free port (choose another --port, or stop the program using it)"
        ) from None
    return sock
