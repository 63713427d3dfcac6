"""One study's report and evidence for people: a text table, a self-contained HTML page, a PNG heatmap.

`explain_html` writes the web page of the service (`page/`) as one file with its script, style, the result and
the images inlined, so it opens offline, in a paper's supplement or a notebook (`IPython.display.HTML`).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from leadrrg.errors import LeadrrgError
from leadrrg.serve.assets import SCRIPT_TAG, STYLE_TAG, TOOLS_TAG, page_text

PREVIEW_SIDE = 512  # embedded images are downsized to this longer side


def evidence_table(evidence: dict[str, Any], limit: int | None = None) -> str:
    """Per token: its text, mean gate and top experts, one line each."""
    tokens = evidence.get("tokens", [])[:limit]
    lines = [f"{'token':<16} {'gate':>6}  top experts (share of the injected context)"]
    for token in tokens:
        experts = ", ".join(f"{name} {weight:.2f}" for name, weight in token.get("experts", []))
        gate = token.get("gate")
        lines.append(
            f"{token['text'].strip()[:16]:<16} {'' if gate is None else f'{gate:.3f}':>6}  {experts}"
        )
    return "\n".join(lines)


CONTRADICTION_WORDS = {
    "omitted": "above its threshold or in its uncertainty band, not stated in the report",
    "overstated": "in its uncertainty band, stated in the report without a hedge",
    "unsupported": "stated in the report, not above its threshold",
    "side": "stated in the report on another side than its expert reads",
    "severity": "stated in the report at another severity than its expert reads",
    "conflicting": "stated in one sentence of the report and denied in another",
}


def _sides(item: dict[str, Any]) -> str:
    """The values of a side or severity contradiction (", stated left, expert reads right"), else ""."""
    if "stated_value" not in item:
        return ""
    return f", stated {item['stated_value']}, expert reads {item['expert_value']}"


def expert_table(
    expert_probs: dict[str, float],
    thresholds: dict[str, float],
    contradictions: Sequence[dict[str, Any]],
    floors: dict[str, float] | None = None,
) -> str:
    """Which experts the report contradicts (`leadrrg.inference.evidence.contradictions`), then every expert,
    most probable first, as "name [!] threshold T  p P" (`!`: contradicted), with an uncertainty band
    "threshold T (hedged above F)"."""
    if contradictions:
        said = "; ".join(
            f"{item['expert']} (p {item['p']:.3f}, threshold {item['threshold']:.2f}: "
            f"{CONTRADICTION_WORDS[item['kind']]}{_sides(item)})"
            for item in contradictions
        )
        lines = [f"The report contradicts {len(contradictions)} expert(s), marked ! below: {said}."]
    else:
        lines = ["The report agrees with every expert (p above its threshold iff the finding is stated)."]
    floors = floors or {}
    flagged = {item["expert"] for item in contradictions}
    ranked = sorted(expert_probs.items(), key=lambda item: -item[1])
    width = max(len(name) for name, _ in ranked) if ranked else 0
    lines += ["", "Expert probabilities:"]
    for name, p in ranked:
        threshold = thresholds.get(name)
        shown = "  n/a" if threshold is None else f"{threshold:.2f}"
        if name in floors and threshold is not None and floors[name] < threshold:
            shown += f" (hedged above {floors[name]:.2f})"
        lines.append(f"  {name:<{width}} {'!' if name in flagged else ' '} threshold {shown}  p {p:.3f}")
    return "\n".join(lines)


def preview_png(gray: np.ndarray) -> bytes:
    """float32 (H, W) in [0, 1] -> 8-bit PNG bytes, longer side at most PREVIEW_SIDE."""
    image = Image.fromarray(np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def explain_html(result: dict[str, Any], images: Sequence[tuple[str, bytes]], name: str = "") -> str:
    """The web page with `result` (ReportResult.to_dict(), with evidence) and (name, PNG bytes) views inlined."""
    embedded = {
        "name": name,
        "result": result,
        "images": [{"name": view_name, "url": data_uri(png)} for view_name, png in images],
    }
    data = script_json(embedded)
    script = page_text("app.js").replace("</", "<\\/")
    tools = page_text("tools.js").replace("</", "<\\/")
    page = _replace_tag(page_text("index.html"), STYLE_TAG, f"<style>\n{page_text('style.css')}</style>")
    page = _replace_tag(page, TOOLS_TAG, f"<script>\n{tools}</script>")
    return _replace_tag(
        page, SCRIPT_TAG, f"<script>window.LEADRRG_EMBEDDED = {data};</script>\n<script>\n{script}</script>"
    )


# Inside <script>, `</script`, `<!--` and `<script` change how the HTML parser reads the rest of the page, and
# U+2028/9 end a line in older JavaScript: each is a \u escape in the JSON, so no file name or report can.
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """`value` as JSON safe to inline in a <script> block (the same value once parsed)."""
    text = json.dumps(value, allow_nan=False)
    return text.translate(str.maketrans(SCRIPT_ESCAPES))


def _replace_tag(page: str, tag: str, replacement: str) -> str:
    """`page` with its one `tag` replaced; an index.html edited without this tag fails here, not silently."""
    if page.count(tag) != 1:
        raise LeadrrgError(
            f"the page's index.html has {page.count(tag)} copies of {tag!r}; the offline page inlines exactly one "
            "(keep the tag, or update STYLE_TAG / SCRIPT_TAG / TOOLS_TAG in leadrrg/serve/assets.py)"
        )
    return page.replace(tag, replacement)


def heatmap_png(evidence: dict[str, Any], cell: int = 14) -> bytes:
    """A tokens x layers gate heatmap (rows: tokens, labelled; columns: layers) as PNG bytes."""
    tokens = [t for t in evidence.get("tokens", []) if "gates" in t]
    if not tokens:
        raise ValueError("no gates to draw: the model does not inject layer-wise")
    gates = np.array([t["gates"] for t in tokens], dtype=np.float32)  # (T, L)
    top = max(float(gates.max()), 1e-9)
    label_width, header = 120, 18
    width, height = label_width + cell * gates.shape[1] + 10, header + cell * len(tokens) + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for layer in range(gates.shape[1]):
        draw.text((label_width + layer * cell + 2, 2), str(layer), fill="black")
    for row, token in enumerate(tokens):
        y = header + row * cell
        draw.text((4, y), token["text"].strip()[:16], fill="black")
        for layer, gate in enumerate(gates[row]):
            strength = float(gate) / top
            colour = (255, int(255 - 132 * strength), int(255 - 255 * strength))
            x = label_width + layer * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
    draw.text((4, height - 16), f"gate, darkest = {top:.3f}; columns: decoder layers", fill="black")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
