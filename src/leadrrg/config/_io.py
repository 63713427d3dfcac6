"""Config io: JSON (`to_dict` / `from_dict`), typed dotted overrides, named presets, config files and the
defaults older runs were trained with."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from leadrrg.config._run import RunConfig
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_write_text, read_json_object

C = TypeVar("C")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON value to the annotated type `tp`, or fail naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise LeadrrgError(f"config key {where!r} must be an object, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], where)
    if origin is typing.Literal:
        # A choice converts as the type of its values (all str); the dataclass then checks it is one of them,
        # failing with the list of choices.
        return _convert(value, type(typing.get_args(tp)[0]), where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LeadrrgError(f"config key {where!r} must be a list, got {value!r}")
        return [_convert(v, item, where) for v in value]
    return _convert_scalar(value, tp, where)


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise LeadrrgError(f"config key {where!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise LeadrrgError(f"config key {where!r} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise LeadrrgError(f"config key {where!r} must be an integer, got {value!r}") from None
    if tp is float:
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise LeadrrgError(f"config key {where!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise LeadrrgError(f"config key {where!r} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise LeadrrgError(f"config key {where!r} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a (possibly partial) dict; unknown keys fail with the valid ones."""
    if not isinstance(data, dict):
        where = f"config key {prefix!r}" if prefix else "a config"
        raise LeadrrgError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in hints or key not in names:
            raise LeadrrgError(f"unknown config key {where!r}; expected one of: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def first_difference(
    a: Any, b: Any, prefix: str = "", now: str = "now", saved: str = "in the run"
) -> str | None:
    """The first dotted key at which `a` (now) and `b` (saved) differ, as "key (b in the run, a now)"; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key, now, saved)
            if found:
                return found
        return None
    return None if a == b else f"{prefix} ({b!r} {saved}, {a!r} {now})"


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], str]:
    if "=" not in text:
        raise LeadrrgError(
            f"override {text!r} is not of the form key.path=value (e.g. model.injection.fusion=none)"
        )
    key, value = text.split("=", 1)
    return key.strip().split("."), value.strip()


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply typed dotted overrides (`train.max_steps=200`) and re-validate the whole config."""
    data = to_dict(config)
    for text in overrides:
        path, raw = parse_override(text)
        # Parse JSON-looking values (numbers, true/false, null, lists); keep anything else as a string.
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node: dict[str, Any] = data
        for i, part in enumerate(path[:-1]):
            if not isinstance(node.get(part), dict):
                raise LeadrrgError(f"unknown config key {'.'.join(path[: i + 1])!r} in override {text!r}")
            node = node[part]
        if path[-1] not in node:
            raise LeadrrgError(
                f"unknown config key {'.'.join(path)!r} in override {text!r}; expected one of: {', '.join(node)}"
            )
        node[path[-1]] = (
            str(value) if isinstance(node[path[-1]], str) and not isinstance(value, str) else value
        )
    return from_dict(type(config), data)


def preset_names() -> list[str]:
    files = resources.files("leadrrg").joinpath("presets")
    return sorted(p.name[: -len(".json")] for p in files.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> RunConfig:
    """A named preset shipped in `leadrrg/presets/NAME.json` (partial; defaults fill the rest)."""
    if name not in preset_names():
        raise LeadrrgError(f"unknown preset {name!r}; expected one of: {', '.join(preset_names())}")
    text = resources.files("leadrrg").joinpath("presets", f"{name}.json").read_text()
    data = json.loads(text)
    data.setdefault("preset", name)
    return from_dict(RunConfig, data)


def save_config(config: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(to_dict(config), indent=2) + "\n")


# Settings whose default changed after runs were saved without them: a run's config.json that lacks one was
# trained with the old behaviour, so it keeps it (the new default applies to new runs only).
RUN_DEFAULTS_BEFORE_CHANGE: dict[tuple[str, ...], Any] = {
    ("model", "experts", "readout"): "query",
    ("model", "experts", "attributes"): False,
    ("model", "grounding", "side_flip"): 0.0,
    ("model", "grounding", "hedge"): False,
    ("model", "grounding", "hedge_edit"): 0.0,
    ("model", "grounding", "expert_warmup_steps"): 0,
    ("model", "grounding", "balance"): "context",
    ("model", "grounding", "counterfactual"): 0.0,
    ("decode", "expert_threshold"): 0.0,
    ("decode", "derive_no_finding"): False,
}


def _read_config_dict(path: Path) -> dict[str, Any]:
    """The JSON object of a config file, or a LeadrrgError naming it."""
    return read_json_object(path, "config file", "a leadrrg config (a JSON object)")


def _config_from_file(path: Path, cls: type[C], data: dict[str, Any]) -> C:
    try:
        return from_dict(cls, data)
    except LeadrrgError as exc:
        raise LeadrrgError(f"config file {path}: {exc}") from None


def load_config(path: str | Path, cls: type[C] = RunConfig) -> C:  # type: ignore[assignment]
    path = Path(path)
    return _config_from_file(path, cls, _read_config_dict(path))


def load_run_config(path: str | Path) -> RunConfig:
    """A trained run's config.json, with settings it predates filled by the behaviour it was trained with."""
    path = Path(path)
    data = _read_config_dict(path)
    for key, old in RUN_DEFAULTS_BEFORE_CHANGE.items():
        node = data
        for part in key[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(key[-1], old)
    return _config_from_file(path, RunConfig, data)
