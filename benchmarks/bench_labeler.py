"""Speed of the rule-based labeler on generated, realistic chest X-ray reports (one core).

    python benchmarks/bench_labeler.py [--reports 5000] [--repeats 3] [--seed 0]

Reports are assembled from typical findings / impression sentences (normal statements, positive,
negated and hedged findings, devices, de-identification tokens, numbered impressions), 4-12
sentences each. Prints reports/s by wall clock and by process CPU time (the latter is the fair
one-core number on a shared machine); the best of `--repeats` runs counts.

The labeler labels each normalised sentence once and keeps it in a bounded cache (`rules._sentence_ranks`);
reports repeat most of their sentences. So the benchmark prints two rates per corpus: with the cache emptied
before every run (its hit rate beside it), and with the cache bypassed (every sentence labelled afresh: the
engine's own speed, what a corpus of all-new sentences gets). The generated reports reuse 33 sentences, an
upper bound for the cache; `--file` adds a real corpus (a CSV with `findings` / `impression` columns, such as
the IU X-Ray `indiana_reports.csv`, or a text file with one report per line).
"""

from __future__ import annotations

import argparse
import random
import sys
import time

SENTENCES = (
    "The heart size is normal.",
    "Heart size and mediastinal contours are within normal limits.",
    "The cardiomediastinal silhouette is stable.",
    "Mild cardiomegaly is unchanged.",
    "The heart is moderately enlarged.",
    "Borderline heart size.",
    "Lungs are clear.",
    "There is no focal consolidation, pleural effusion, or pneumothorax.",
    "No focal airspace disease, suspicious pulmonary opacity, or definite pleural effusion.",
    "Streaky opacities in the left base, likely atelectasis.",
    "Patchy right lower lobe airspace disease concerning for pneumonia.",
    "Small bilateral pleural effusions.",
    "Pneumonia cannot be excluded.",
    "There is mild pulmonary vascular congestion without frank edema.",
    "Calcified granuloma in the right upper lobe.",
    "XXXX sternotomy XXXX and mediastinal surgical clips.",
    "Left chest pacemaker with leads in the right atrium and right ventricle.",
    "Right IJ central venous catheter tip projects over the SVC.",
    "Healed left rib fractures.",
    "Degenerative changes of the thoracic spine.",
    "No acute bony abnormality.",
    "There is a 1 cm nodule in the right upper lobe, not seen previously.",
    "Low lung volumes with bronchovascular crowding.",
    "Small right apical pneumothorax, decreased from prior.",
    "Apical pleural thickening bilaterally.",
    "The lungs are hyperexpanded, compatible with COPD.",
    "Widened mediastinum, possibly vascular.",
    "No evidence of active tuberculosis.",
)
IMPRESSIONS = (
    "No acute cardiopulmonary abnormality.",
    "Cardiomegaly without acute pulmonary disease.",
    "Left basilar atelectasis versus pneumonia.",
    "Stable chest.",
    "Small bilateral effusions with bibasilar atelectasis.",
)


def make_reports(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        findings = " ".join(rng.sample(SENTENCES, rng.randint(3, 9)))
        items = rng.sample(IMPRESSIONS, rng.randint(1, 3))
        impression = " ".join(f"{i}. {text}" for i, text in enumerate(items, start=1))
        reports.append(f"FINDINGS: {findings} IMPRESSION: {impression}")
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=5000, help="reports per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--file", help="also a real corpus: a CSV with findings/impression columns or a text file"
    )
    args = parser.parse_args(argv)

    corpora = {"generated": make_reports(args.reports, args.seed)}
    if args.file:
        corpora[args.file] = read_corpus(args.file)
    for name, reports in corpora.items():
        chars = sum(map(len, reports)) / len(reports)
        print(f"{name}: {len(reports)} reports, {chars:.0f} characters on average, best of {args.repeats}")
        for cached in (True, False):
            wall, cpu, hit_rate = measure(reports, args.repeats, cached)
            label = f"sentence cache (hit rate {hit_rate:.0%})" if cached else "no cache (every sentence new)"
            print(
                f"  {label:<36} wall clock {len(reports) / wall:>8,.0f} reports/s, "
                f"CPU time {len(reports) / cpu:>8,.0f} reports/s (one core)"
            )
    return 0


def read_corpus(path: str) -> list[str]:
    """Reports of a CSV (findings + impression columns, or a `report` column) or of a text file, one per line."""
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        if not path.endswith(".csv"):
            return [line.strip() for line in handle if line.strip()]
        rows = list(csv.DictReader(handle))
    if rows and "report" in rows[0]:
        return [row["report"] for row in rows if row["report"].strip()]
    texts = [" ".join(filter(None, (row.get("findings"), row.get("impression")))) for row in rows]
    return [text for text in texts if text.strip()]


def measure(reports: list[str], repeats: int, cached: bool) -> tuple[float, float, float]:
    """(best wall seconds, best CPU seconds, sentence-cache hit rate) of labelling `reports`; the cache is emptied
    before every run, or bypassed when not `cached`."""
    from leadrrg.labeler import label_reports, rules

    sentence_ranks = rules._sentence_ranks
    if not cached:
        rules._sentence_ranks = sentence_ranks.__wrapped__
    try:
        label_reports(reports[:50])  # warm up
        best_wall = best_cpu = float("inf")
        for _ in range(repeats):
            sentence_ranks.cache_clear()
            wall, cpu = time.perf_counter(), time.process_time()
            labels = label_reports(reports)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        info = sentence_ranks.cache_info()
    finally:
        rules._sentence_ranks = sentence_ranks
    assert labels.shape == (len(reports), 14)
    return best_wall, best_cpu, info.hits / max(1, info.hits + info.misses)


if __name__ == "__main__":
    sys.exit(main())
