"""Score the labeler's side, severity and zone against the human MeSH qualifiers of IU X-Ray reports.

    python scripts/eval_attributes_iu.py --data /work/shared/data/iu_reports [--errors side]

The labeler reads `findings` + `impression` (as `scripts/eval_labeler_iu.py` does). The reference is the
`MeSH` column: an entry such as `Pleural Effusion/bilateral/small` or `Opacity/lung/base/left` belongs to
the observations its head term maps to (`mesh_to_chexpert.json`) and its qualifiers give
- side: `right`, `left`, `bilateral` (an observation with both `right` and `left` entries is bilateral);
- severity: `mild` / `small` -> mild, `moderate` -> moderate, `severe` / `large` -> large (the largest
  when several entries state one; `borderline` states none);
- zone: `upper lobe` / `apex` -> upper, `middle lobe` / `lingula` -> middle, `lower lobe` / `base` ->
  lower (several zones joined by "+", as the labeler does).
For each row and each observation that both the labeler (positive or uncertain) and the MeSH mapping
assert, an attribute is compared when both state it. Printed: n and agreement per attribute (with a 95%
Wilson interval), the confusion table (rows MeSH, columns labeler), how often one side states the
attribute and the other does not, and per-observation agreement.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

from leadrrg.constants import OBSERVATIONS, SEVERITIES, SIDES
from leadrrg.labeler.attributes import ATTRIBUTE_OBSERVATIONS, ZONES, label_attributes

MESH_SEVERITY = {"mild": "mild", "small": "mild", "moderate": "moderate", "severe": "large", "large": "large"}
MESH_ZONE = {"upper lobe": "upper", "apex": "upper", "middle lobe": "middle", "lingula": "middle"}
MESH_ZONE |= {"lower lobe": "lower", "base": "lower"}


def _matches(entry: str, rule: dict) -> bool:
    head = entry.split("/")[0]
    return head in set(rule.get("heads", ())) or entry.startswith(tuple(rule.get("prefixes", ())) or "\0")


def mesh_attributes(mesh: str, mapping: dict) -> dict[str, dict[str, str | None]]:
    """The MeSH column as `{observation: {"side", "severity", "zone"}}` for the observations it asserts."""
    entries = [e.strip() for e in mesh.split(";") if e.strip()]
    out = {}
    for name in ATTRIBUTE_OBSERVATIONS:
        rule = mapping.get(name, {})
        matched = [e for e in entries if _matches(e, rule)]
        if not matched:
            continue
        sides, severities, zones = set(), set(), set()
        for entry in matched:
            for qualifier in (q.strip() for q in entry.split("/")[1:]):
                if qualifier in SIDES:
                    sides.add(qualifier)
                if qualifier in MESH_SEVERITY:
                    severities.add(MESH_SEVERITY[qualifier])
                if qualifier in MESH_ZONE:
                    zones.add(MESH_ZONE[qualifier])
        side = "bilateral" if "bilateral" in sides or {"right", "left"} <= sides else next(iter(sides), None)
        out[name] = {
            "side": side,
            "severity": max(severities, key=SEVERITIES.index) if severities else None,
            "zone": "+".join(z for z in ZONES if z in zones) or None,
        }
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def compare(labeler: list[dict], reference: list[dict], attribute: str) -> dict:
    confusion: Counter = Counter()
    per_observation: dict[str, list[int]] = {}
    only_reference = only_labeler = neither = 0
    pairs = []
    for row, (hyp, ref) in enumerate(zip(labeler, reference)):
        for name in hyp.keys() & ref.keys():
            stated, truth = hyp[name][attribute], ref[name][attribute]
            if stated is None and truth is None:
                neither += 1
            elif stated is None:
                only_reference += 1
            elif truth is None:
                only_labeler += 1
            else:
                confusion[(truth, stated)] += 1
                counts = per_observation.setdefault(name, [0, 0])
                counts[0] += stated == truth
                counts[1] += 1
                pairs.append((row, name, truth, stated))
    n = sum(confusion.values())
    agree = sum(v for (t, s), v in confusion.items() if t == s)
    return {
        "n": n,
        "agree": agree,
        "confusion": confusion,
        "per_observation": per_observation,
        "only_reference": only_reference,
        "only_labeler": only_labeler,
        "neither": neither,
        "pairs": pairs,
    }


def print_result(attribute: str, result: dict, values: tuple[str, ...]) -> None:
    n, agree = result["n"], result["agree"]
    low, high = wilson(agree, n)
    share = agree / n if n else math.nan
    print(f"\n{attribute}: agreement {share:.3f} ({agree}/{n}), 95% CI [{low:.3f}, {high:.3f}]")
    print(
        f"  both asserted, stated by MeSH only: {result['only_reference']}, by the labeler only: "
        f"{result['only_labeler']}, by neither: {result['neither']}"
    )
    labels = [v for v in values if any(v in key for key in result["confusion"])]
    labels += sorted({v for key in result["confusion"] for v in key} - set(labels))
    width = max([len(v) for v in labels] + [12])
    print(f"  {'MeSH/labeler':>{width}s} " + " ".join(f"{v:>{width}s}" for v in labels))
    for truth in labels:
        cells = " ".join(f"{result['confusion'][(truth, stated)]:>{width}d}" for stated in labels)
        print(f"  {truth:>{width}s} {cells}")
    for name in OBSERVATIONS:
        if name in result["per_observation"]:
            k, m = result["per_observation"][name]
            print(f"  {name:28s} {k:4d}/{m:<4d} {k / m:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with indiana_reports_dev.csv and mesh_to_chexpert.json",
    )
    parser.add_argument("--csv", default="indiana_reports_dev.csv", help="report CSV inside --data")
    parser.add_argument(
        "--errors", choices=("side", "severity", "zone"), default=None, help="print the disagreements"
    )
    args = parser.parse_args(argv)

    mapping = json.loads((args.data / "mesh_to_chexpert.json").read_text(encoding="utf-8"))
    with open(args.data / args.csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reports = [f"{r['findings'] or ''} {r['impression'] or ''}".strip() for r in rows]
    reference = [mesh_attributes(r["MeSH"], mapping) for r in rows]

    start = time.perf_counter()
    labeler = label_attributes(reports)
    seconds = time.perf_counter() - start
    both = sum(len(h.keys() & r.keys()) for h, r in zip(labeler, reference))
    print(
        f"{len(reports)} reports: attributes extracted in {seconds:.2f} s; {both} (report, observation) pairs"
    )
    print("asserted by both the labeler (positive or uncertain) and the MeSH annotation")

    for attribute, values in (("side", SIDES), ("severity", SEVERITIES), ("zone", ZONES)):
        result = compare(labeler, reference, attribute)
        print_result(attribute, result, values)
        if args.errors == attribute:
            for row, name, truth, stated in result["pairs"]:
                if truth != stated:
                    print(f"\n[{name}: MeSH {truth}, labeler {stated}] uid {rows[row]['uid']}")
                    print(f"  MeSH: {rows[row]['MeSH']}\n  {reports[row]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
