"""String-keyed registries for the parts that get swapped: vision encoders (`model.vision.VISION_ENCODERS`),
decoder backbones (`model.decoder.BACKBONES`) and data formats (`data.manifests.FORMATS`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from leadrrg.errors import LeadrrgError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a config key to a constructor or a spec. Unknown keys fail with the list of valid keys."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise LeadrrgError(f"unknown {self.kind} {name!r}; expected one of: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
