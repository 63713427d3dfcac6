"""What evidence-consistent decoding (`decode.rerank`) costs on a split of a trained run, and what reranking the
contradicting studies of several batches together (`generate_split`) saves against reranking batch by batch.

    .venv/bin/python benchmarks/bench_rerank.py --run runs/demo/lead [--split test] [--rerank 8] [--repeats 3]

Three ways to decode the same studies with the run's own experts, in interleaved repeats in one process (median
wall time each): the first pass alone (`decode.rerank=0`), reranked batch by batch (`ReportGenerator.decode` on
each `decode.batch_size` batch, as `generate_split` did before), and reranked across batches (`generate_split`).
Prints the studies reranked, the decoding passes each way takes, and checks that both reranked ways give the
same reports.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

import leadrrg
from leadrrg.data.dataset import StudyDataset
from leadrrg.inference.batch import split_studies
from leadrrg.inference.predict import generate_split
from leadrrg.inference.rerank import disagreement
from leadrrg.inference.result import ReportResult


def per_batch(generator, studies, decode) -> list[str]:
    """Reports reranked one `decode.batch_size` batch at a time (the earlier `generate_split`)."""
    config = generator.config
    dataset = StudyDataset(studies, config.model.vision, config.model.max_views, train=False)
    reports = []
    for batch in DataLoader(dataset, batch_size=decode.batch_size, shuffle=False):
        reports += [r.report for r in generator.decode(batch["images"], batch["view_mask"], decode)]
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--rerank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = leadrrg.load(args.run, device="cpu")
    studies = split_studies(generator.config, args.split)
    reranked = generator.decode_config(rerank=args.rerank)
    first = generator.decode_config(rerank=0)

    passes = {"rerank": 0}
    decode_results = generator._results

    def counting(*a, **k):
        passes["rerank"] += 1
        return decode_results(*a, **k)

    generator._results = counting
    ways = {
        "first pass only": lambda: [r["generated"] for r in generate_split(generator, studies, first)],
        "reranked batch by batch": lambda: per_batch(generator, studies, reranked),
        "reranked across batches": lambda: [
            r["generated"] for r in generate_split(generator, studies, reranked)
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    reports: dict[str, list[str]] = {}
    calls: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, run in ways.items():
            generator.reseed(0)
            passes["rerank"] = 0
            start = time.perf_counter()
            reports[name] = run()
            times[name].append(time.perf_counter() - start)
            calls[name] = passes["rerank"]
    first_results = generate_split(generator, studies, first, evidence=True)
    contradicting = sum(1 for r in first_results if any(disagreement_of(r, reranked)))
    print(
        f"{args.run} {args.split}: {len(studies)} studies, batch {reranked.batch_size}, rerank {args.rerank}; "
        f"{contradicting} first reports contradict their experts; torch threads {torch.get_num_threads()}"
    )
    base = statistics.median(times["first pass only"])
    for name in ways:
        median = statistics.median(times[name])
        print(
            f"  {name:<26} {median:6.2f} s (median of {args.repeats}; x{median / base:.2f} the first pass), "
            f"{calls[name]} decoding passes"
        )
    same = reports["reranked batch by batch"] == reports["reranked across batches"]
    print(f"  both reranked ways give the same reports: {same}")


def disagreement_of(record: dict, decode) -> tuple[int, int]:
    """`disagreement` of a prediction record written with evidence."""
    result = ReportResult(report=record["generated"], expert_probs={}, findings={})
    result.contradictions = record["contradictions"] or []
    return disagreement(result, decode)


if __name__ == "__main__":
    main()
