"""Score the rule-based labeler against human MeSH annotations of IU X-Ray reports.

    python scripts/eval_labeler_iu.py --data /work/shared/data/iu_reports [--errors Cardiomegaly]

The labeler reads `findings` + `impression`; the reference is the `MeSH` column mapped to the 14
observations with `mesh_to_chexpert.json` (an observation is 1 when any MeSH entry matches, else 0).
Two comparisons are printed:
- "positive only" (the headline): labeler 1 counts as positive, the convention of DESIGN.md's
  clinical-efficacy metrics and of CheXpert-style comparisons.
- "uncertain as positive" (U-ones): labeler 1 or -1 counts as positive. MeSH annotators index some
  hedged findings ("probable atelectasis") but not most ("could represent pneumonia"), so this
  mostly costs precision (Pneumonia above all).
Macro-F1 averages the observations with reference support; micro-F1 pools all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.labeler import label_reports


def mesh_labels(mesh: str, mapping: dict) -> np.ndarray:
    labels = np.zeros(len(OBSERVATIONS), dtype=np.int8)
    entries = [e.strip() for e in mesh.split(";") if e.strip()]
    for i, name in enumerate(OBSERVATIONS):
        rule = mapping.get(name, {})
        heads = set(rule.get("heads", ()))
        prefixes = tuple(rule.get("prefixes", ()))
        if any(e.split("/")[0] in heads or (prefixes and e.startswith(prefixes)) for e in entries):
            labels[i] = 1
    return labels


def scores(reference: np.ndarray, predicted: np.ndarray) -> tuple[list[tuple], float, float]:
    rows = []
    tp_all = fp_all = fn_all = 0
    for i, name in enumerate(OBSERVATIONS):
        ref, hyp = reference[:, i] == 1, predicted[:, i]
        tp, fp, fn = int((ref & hyp).sum()), int((~ref & hyp).sum()), int((ref & ~hyp).sum())
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((name, precision, recall, f1, int(ref.sum()), int(hyp.sum())))
    macro = float(np.mean([r[3] for r in rows if r[4] > 0]))
    micro = 2 * tp_all / (2 * tp_all + fp_all + fn_all) if tp_all else 0.0
    return rows, macro, micro


def print_table(title: str, rows: list[tuple], macro: float, micro: float) -> None:
    print(f"\n{title}")
    print(f"{'observation':28s} {'P':>6s} {'R':>6s} {'F1':>6s} {'support':>8s} {'predicted':>9s}")
    for name, p, r, f1, support, predicted in rows:
        print(f"{name:28s} {p:6.3f} {r:6.3f} {f1:6.3f} {support:8d} {predicted:9d}")
    print(f"{'macro-F1 (with support)':28s} {macro:6.3f}")
    print(f"{'micro-F1':28s} {micro:6.3f}")


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
    parser.add_argument("--errors", default=None, help="print the disagreements for this observation")
    args = parser.parse_args(argv)

    mapping = json.loads((args.data / "mesh_to_chexpert.json").read_text(encoding="utf-8"))
    with open(args.data / args.csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reports = [f"{r['findings'] or ''} {r['impression'] or ''}".strip() for r in rows]
    reference = np.stack([mesh_labels(r["MeSH"], mapping) for r in rows])

    start = time.perf_counter()
    labels = label_reports(reports)
    seconds = time.perf_counter() - start
    print(f"{len(reports)} reports labelled in {seconds:.2f} s ({len(reports) / seconds:.0f} reports/s)")

    table, macro, micro = scores(reference, labels == 1)
    print_table("positive only (headline)", table, macro, micro)
    table, macro, micro = scores(reference, (labels == 1) | (labels == -1))
    print_table("uncertain as positive", table, macro, micro)

    if args.errors:
        if args.errors not in OBSERVATIONS:
            parser.error(f"--errors must be one of: {', '.join(OBSERVATIONS)}")
        i = OBSERVATIONS.index(args.errors)
        for row, report, ref, lab in zip(rows, reports, reference[:, i], labels[:, i]):
            hyp = lab in (1.0, -1.0)
            if bool(ref) != hyp:
                kind = "FN" if ref else f"FP({lab:+.0f})"
                print(f"\n[{kind}] uid {row['uid']} MeSH: {row['MeSH']}\n  {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
