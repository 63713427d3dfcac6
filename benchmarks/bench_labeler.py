"""Speed of the rule-based labeler on generated, realistic chest X-ray reports (one core).

    python benchmarks/bench_labeler.py [--reports 5000] [--repeats 3] [--seed 0]

Reports are assembled from typical findings / impression sentences (normal statements, positive,
negated and hedged findings, devices, de-identification tokens, numbered impressions), 4-12
sentences each. Prints reports/s by wall clock and by process CPU time (the latter is the fair
one-core number on a shared machine); the best of `--repeats` runs counts.
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
    args = parser.parse_args(argv)

    from leadrrg.labeler import label_reports

    reports = make_reports(args.reports, args.seed)
    chars = sum(map(len, reports)) / len(reports)
    label_reports(reports[:50])  # warm up
    best_wall = best_cpu = float("inf")
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        labels = label_reports(reports)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert labels.shape == (len(reports), 14)
    print(f"{len(reports)} reports, {chars:.0f} characters on average, best of {args.repeats}")
    print(f"wall clock: {len(reports) / best_wall:,.0f} reports/s")
    print(f"CPU time:   {len(reports) / best_cpu:,.0f} reports/s (one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
