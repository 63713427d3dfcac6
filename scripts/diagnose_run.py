"""Why does a run write what it writes? Expert accuracy, gate use and report-expert agreement on a split.

    .venv/bin/python scripts/diagnose_run.py --run RUN [--split shift_test] [--limit 200]

Prints, on the split's ground-truth labels (SynthCXR): the experts' macro AUROC and F1 at p > 0.5, the
generated reports' micro F1 against the truth, how often the report agrees with its own experts (a
finding asserted iff p > 0.5), and the mean gate per decoder layer over generated tokens. Experts that
see the finding while the report does not say it point at the decoder's use of the evidence (gate,
lambda, capacity); experts that miss it point at the vision side or the data.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from leadrrg.constants import OBSERVATIONS
from leadrrg.data.manifests import load_studies
from leadrrg.labeler import label_reports
from leadrrg.predict import generate_split
from leadrrg.train import load_run
from leadrrg.train.loop import binary_auroc

FINDINGS = list(range(1, len(OBSERVATIONS)))  # the 13 findings (No Finding excluded)


def micro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    tp = float((truth & predicted).sum())
    return 2 * tp / max(1.0, float(truth.sum() + predicted.sum()))


def oracle_experts(model, studies, batch_size: int) -> None:
    """Make the expert module return ground-truth logits (+-12) for `studies`, batch by batch, in order."""
    truth = torch.tensor(np.array([s.labels for s in studies]), dtype=torch.float32)
    columns = [OBSERVATIONS.index(name) for name in model.config.experts.names]
    logits = (truth[:, columns] * 24.0 - 12.0).split(batch_size)  # (B, K) per batch
    forward, batches = model.experts.forward, iter(logits)

    def forward_with_truth(vision_tokens, token_mask):
        features, _ = forward(vision_tokens, token_mask)
        return features, next(batches).to(features)

    model.experts.forward = forward_with_truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--split", default="shift_test")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="replace the experts' probabilities with the image's ground truth (p = 1 present, 0 absent): "
        "does the decoder follow the expert channel when the experts are right?",
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    model, tokenizer, config = load_run(args.run)
    studies = load_studies(config.data, args.split)[: args.limit]
    if args.oracle:
        oracle_experts(model, studies, config.decode.batch_size)
    records = generate_split(model, tokenizer, config, studies, config.decode, evidence=True)
    truth = np.array([s.labels for s in studies])[:, FINDINGS] == 1  # (N, 13)
    said = label_reports([r["generated"] for r in records])[:, FINDINGS] == 1  # (N, 13)
    oracle = ", oracle experts" if args.oracle else ""
    print(
        f"{args.run} on {args.split} ({len(records)} studies, fusion {config.model.injection.fusion}{oracle})"
    )
    print(f"  report micro-F1 vs truth           {micro_f1(truth, said):.3f}")
    if records[0].get("expert_probs") is None:
        return
    names = [OBSERVATIONS[i] for i in FINDINGS]
    probs = np.array([[r["expert_probs"][name] for name in names] for r in records])  # (N, 13)
    aurocs = [binary_auroc(probs[:, k], truth[:, k].astype(float)) for k in range(len(names))]
    aurocs = [a for a in aurocs if a is not None]
    seen = probs > 0.5
    print(f"  expert macro AUROC vs truth        {np.mean(aurocs):.3f}")
    print(f"  expert micro-F1 (p > 0.5) vs truth {micro_f1(truth, seen):.3f}")
    print(f"  report agrees with its experts     {micro_f1(seen, said):.3f} (micro-F1, experts as reference)")
    print(f"  truth findings the experts saw but the report omitted: {(truth & seen & ~said).sum()}")
    print(f"  findings the report asserted against its experts:      {(said & ~seen).sum()}")
    gates = [np.array(r["evidence"]["gates"]) for r in records if r["evidence"]["gates"] is not None]
    if gates:
        per_layer = np.concatenate(gates).mean(axis=0)
        print("  mean gate per layer                " + " ".join(f"{g:.3f}" for g in per_layer))


if __name__ == "__main__":
    main()
