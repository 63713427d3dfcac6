"""The variants of `leadrrg bench faithfulness`: LEAD, its baselines and its ablations, as data.

The table is `experiments/variants.json`: `main` (the variants run by default) and `variants`, name ->

    overrides   config overrides on top of the benchmark's preset (what the variant trains)
    recipe_of   a preset whose recipe (its settings under RECIPE_SECTIONS) is the variant's overrides
    decode      decode-time overrides
    trained_as  for a decoding-time variant: the variant whose trained runs it decodes with
    about       one line for the help and the docs

Besides the baselines, every ablation of the default LEAD removes one technique or changes one
architectural switch. The paper's recipe is written once, in `presets/lead_paper.json`; the variant
`lead_paper` takes it from there (`recipe_of`), leaving the benchmark's data, vision encoder and budget alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from leadrrg.errors import LeadrrgError

# The parts of a preset that make its recipe (how the experts are trained and read), as opposed to its data,
# vision encoder and training budget.
RECIPE_SECTIONS = (("model", "experts"), ("model", "injection"), ("model", "grounding"), ("decode",))
VARIANT_KEYS = ("overrides", "recipe_of", "decode", "trained_as", "about")


@dataclass(frozen=True)
class Variant:
    """One benchmark variant: config overrides on top of the preset, decode-time overrides, and (for
    decoding-time variants) the variant whose trained runs it decodes with."""

    overrides: tuple[str, ...] = ()
    decode: tuple[str, ...] = ()
    trained_as: str | None = None
    about: str = ""


def _override(path: tuple[str, ...], value: Any) -> str:
    return ".".join(path) + "=" + (value if isinstance(value, str) else json.dumps(value))


def recipe_overrides(preset: str) -> tuple[str, ...]:
    """The shipped preset's settings under RECIPE_SECTIONS, as dotted overrides in the file's order."""
    data = json.loads(resources.files("leadrrg").joinpath("presets", f"{preset}.json").read_text())
    overrides = []
    for section in RECIPE_SECTIONS:
        node = data
        for part in section:
            node = node.get(part, {})
        overrides += [_override((*section, key), value) for key, value in node.items()]
    return tuple(overrides)


def _variant(name: str, spec: dict[str, Any]) -> Variant:
    unknown = sorted(set(spec) - set(VARIANT_KEYS))
    if unknown:
        raise LeadrrgError(
            f"bench variant {name!r} has unknown keys {unknown}; expected: {', '.join(VARIANT_KEYS)}"
        )
    overrides = tuple(spec.get("overrides", ()))
    if "recipe_of" in spec:
        overrides = recipe_overrides(spec["recipe_of"]) + overrides
    return Variant(overrides, tuple(spec.get("decode", ())), spec.get("trained_as"), spec.get("about", ""))


def load_variants() -> tuple[dict[str, Variant], tuple[str, ...]]:
    """(every variant by name, the main ones) from the shipped `experiments/variants.json`."""
    data = json.loads(resources.files("leadrrg").joinpath("experiments", "variants.json").read_text())
    return {name: _variant(name, spec) for name, spec in data["variants"].items()}, tuple(data["main"])


VARIANTS, MAIN_VARIANTS = load_variants()
# The paper's recipe (joint training, L_LM + 4 x BCE, the decoder reads the experts' own p), from its preset.
PAPER = recipe_overrides("lead_paper")


def parse_variants(text: str) -> list[str]:
    """`main`, `all` or a comma-separated list of variant names."""
    if text == "main":
        return list(MAIN_VARIANTS)
    if text == "all":
        return list(VARIANTS)
    variants = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise LeadrrgError(
            f"unknown variant(s) {', '.join(unknown)}; expected main, all or some of: {', '.join(VARIANTS)}"
        )
    return variants
