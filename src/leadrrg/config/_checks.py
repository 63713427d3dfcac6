"""Validation helpers shared by the config dataclasses: each failure is one sentence naming the key."""

from __future__ import annotations

import math
from typing import Any

from leadrrg.errors import LeadrrgError


def _check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise LeadrrgError(f"{owner}.{name} is {value!r}; expected one of: {', '.join(map(str, choices))}")


def _check_positive(owner: str, name: str, value: float, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise LeadrrgError(
            f"{owner}.{name} is {value!r}; expected a finite {'non-negative' if allow_zero else 'positive'} number"
        )


def _check_range(
    owner: str, name: str, value: float, low: float, high: float, high_open: bool = False
) -> None:
    """low <= value <= high (or < high); NaN fails."""
    if not (low <= value <= high) or (high_open and value == high):
        raise LeadrrgError(
            f"{owner}.{name} is {value!r}; expected a number in [{low}, {high}{')' if high_open else ']'}"
        )
