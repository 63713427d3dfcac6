"""The service's settings (`leadrrg serve` flags), in a module light enough for the CLI parser (no torch)."""

from dataclasses import dataclass

from leadrrg.errors import LeadrrgError


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    max_batch: int = 16  # studies decoded together
    max_wait_ms: float = 40.0  # how long the first waiting study waits for company (under concurrency only)
    max_queue: int = 64  # studies waiting beyond the running batch; more get 429
    max_request_bytes: int = 32 * 1024 * 1024  # 413 above this
    max_pixels: int = 25_000_000  # per image (decompression bombs); a 4300 x 4300 radiograph is 18.5M

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_request_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise LeadrrgError(f"serve {name} is {getattr(self, name)!r}; expected a positive number")
        if self.max_wait_ms < 0:
            raise LeadrrgError(f"serve max_wait_ms is {self.max_wait_ms!r}; expected a non-negative number")
        if not 0 <= self.port <= 65535:
            raise LeadrrgError(f"port {self.port} is not a TCP port; expected 0-65535")
