"""The image header check remembered per data root: an image that passed is not checked again while its size and
modification time are those it had when it passed.

One JSON file per data root (`{"format", "root", "files": {path: [size, mtime_ns]}}`, paths relative to the root when
inside it), kept with the project's other caches (`leadrrg.fetch.default_cache_dir()`, never inside the data root,
which may be read-only) and rewritten atomically. Only images that passed are kept: a missing, changed or failed
image is checked again at every start. A cache file that cannot be read (torn, another format) counts as empty, and
one that cannot be written only costs the next start its check.

Stamps are taken before the check, so an image rewritten while it is checked has a stamp that no longer matches
and is checked again next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
STAT_CHUNK = 4096  # paths stat-ed per thread task (threads help on network file systems)

Stamp = tuple[int, int]  # (size in bytes, mtime in ns)


def header_cache_file(cache_dir: str | Path, root: str, version: str) -> Path:
    """The cache file of data root `root` (absolute) for this version of the check."""
    key = hashlib.sha256(os.path.realpath(root).encode("utf-8")).hexdigest()[:16]
    return Path(cache_dir) / "image_headers" / f"{key}-{version}.json"


def _stamps(paths: Sequence[str]) -> list[Stamp | None]:
    stamps: list[Stamp | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_size, stat.st_mtime_ns))
    return stamps


def file_stamps(paths: Sequence[str], workers: int = 8) -> list[Stamp | None]:
    """(size, mtime_ns) of every path, None where it cannot be stat-ed, in order."""
    chunks = [paths[start : start + STAT_CHUNK] for start in range(0, len(paths), STAT_CHUNK)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return [stamp for stamps in pool.map(_stamps, chunks) for stamp in stamps]


class HeaderCache:
    """The images of one data root that passed the header check, with the stamps they had then."""

    def __init__(self, path: str | Path, root: str):
        self.path = Path(path)
        self.root = os.path.realpath(root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        self.files: dict[str, list[int]] = self._read()
        self.changed = False

    def _read(self) -> dict[str, list[int]]:
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("image header cache %s unreadable (%s); checking every image", self.path, exc)
            return {}
        if not isinstance(content, dict) or content.get("format") != CACHE_FORMAT:
            return {}
        files = content.get("files")
        return files if isinstance(files, dict) else {}

    def key(self, path: str) -> str:
        return path[len(self.prefix) :] if path.startswith(self.prefix) else path

    def stale(self, paths: Sequence[str], stamps: Sequence[Stamp | None]) -> list[int]:
        """Indices of `paths` to check: not in the cache, or with another stamp now (or none: missing)."""
        files = self.files
        return [
            index
            for index, (path, stamp) in enumerate(zip(paths, stamps))
            if stamp is None or files.get(self.key(path)) != [stamp[0], stamp[1]]
        ]

    def record(self, path: str, stamp: Stamp | None, passed: bool) -> None:
        """The outcome of checking `path` (stamped `stamp` before the check)."""
        key = self.key(path)
        if passed and stamp is not None:
            self.files[key] = [stamp[0], stamp[1]]
            self.changed = True
        elif self.files.pop(key, None) is not None:
            self.changed = True

    def save(self) -> None:
        """Rewrite the cache file atomically when anything changed; a failure to write is a warning."""
        if not self.changed:
            return
        content = {"format": CACHE_FORMAT, "root": self.root, "files": self.files}
        try:
            atomic_write_text(self.path, json.dumps(content, separators=(",", ":")))
        # A read-only or full cache folder: the next start checks again.
        except (OSError, LeadrrgError) as exc:
            logger.warning("could not write the image header cache %s (%s)", self.path, exc)
            return
        self.changed = False
