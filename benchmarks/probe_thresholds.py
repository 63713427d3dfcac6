"""Which threshold rule? Decode a trained run on a selection set (never an evaluation split) with the decoder reading
each rule's thresholds, all calibrated on the run's own validation split, and print hallucination, omission and
CE-14 against the image truth.

    leadrrg synth --out runs/select --seed 7 --train 0 --val 200 --test 0 --shift-test 300
    python benchmarks/probe_thresholds.py --run runs/demo/lead --select runs/select --splits val,shift_test
"""

from __future__ import annotations

import argparse
import dataclasses

from leadrrg.data.manifests import load_studies
from leadrrg.evaluation.evaluate import evaluate_predictions
from leadrrg.inference.api import load
from leadrrg.inference.calibrate import RULES, calibrate_thresholds, expert_probabilities
from leadrrg.inference.predict import generate_split

METRICS = ("gt_hallucination_rate", "gt_omission_rate", "gt_ce14_micro_f1", "gt_laterality_accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--select", required=True, help="a SynthCXR selection set (its own data seed)")
    parser.add_argument("--splits", default="val,shift_test")
    args = parser.parse_args()
    generator = load(args.run, device="cpu", overrides=["decode.thresholds=global"])
    config = generator.config
    names = list(config.model.experts.names)
    probs, labels = expert_probabilities(generator.model, config, load_studies(config.data, "val"))
    fallback = config.decode.expert_threshold
    rules = {"global": {}}
    for rule in RULES:
        content = calibrate_thresholds(probs, labels, names, config.model.label_policy, fallback, "val", rule)
        rules[rule] = content["thresholds"]
    data = dataclasses.replace(config.data, root=args.select)
    print(f"{'rule':<10} {'split':<11}" + "".join(f"{m.removeprefix('gt_'):>22}" for m in METRICS))
    for rule, thresholds in rules.items():
        mode = "global" if rule == "global" else "calibrated"
        decode = dataclasses.replace(config.decode, thresholds=mode, expert_thresholds=thresholds)
        for split in args.splits.split(","):
            studies = load_studies(data, split)
            generator.reseed(0)
            records = generate_split(generator, studies, decode=decode)
            metrics = evaluate_predictions(records, meteor=False)
            cells = "".join(
                f"{metrics.get(m) if metrics.get(m) is None else round(metrics[m], 3):>22}" for m in METRICS
            )
            print(f"{rule:<10} {split:<11}" + cells, flush=True)


if __name__ == "__main__":
    main()
