"""`leadrrg generate`: reports from a trained run, for a data split or for one study's images.

    leadrrg generate --run RUN --data DIR --split test --out preds.jsonl [--limit N] [--evidence]
                     [--set decode.strategy=beam --set decode.num_beams=4 ...]
    leadrrg generate --run RUN --images frontal.png [lateral.png] [--json] [--evidence]

Data mode writes one JSON object a line (`id`, `reference`, `generated`, ground-truth `labels` when the data
has them, and `expert_probs` + `evidence` with --evidence; see `leadrrg.predict`), atomically: the file is
complete or absent. The data layout and report section come from the run's config (data.format,
data.section, data.clean); --data replaces data.root and --format data.format. Image mode prints the report
and the experts' probabilities, most probable first (or one JSON object with --json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leadrrg.config import DATA_FORMATS
from leadrrg.errors import LeadrrgError
from leadrrg.io import check_output_file, path_problem

OVERRIDABLE = ("decode.", "data.")  # --set may change decoding and data reading, never the trained model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="trained run directory (written by leadrrg train)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="data root (default: the run's data.root)")
    source.add_argument(
        "--images", nargs="+", metavar="IMAGE", help="one study's image files (PNG/JPEG/DICOM), frontal first"
    )
    parser.add_argument("--split", default="test", help="split to generate for (default: test)")
    parser.add_argument("--out", help="predictions JSONL to write (data mode)")
    parser.add_argument("--format", choices=DATA_FORMATS, help="data layout (default: the run's data.format)")
    parser.add_argument("--limit", type=int, help="generate for the first N studies of the split only")
    parser.add_argument(
        "--evidence",
        action="store_true",
        help="also write the expert probabilities and per-token gates / expert weights (alpha)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed override of a decode.* or data.* config field (repeatable), e.g. decode.strategy=beam",
    )
    parser.add_argument("--batch-size", type=int, help="studies per batch (default: decode.batch_size)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling generator (decode.strategy=sample)"
    )
    parser.add_argument("--json", action="store_true", help="image mode: print one JSON object")


def run(args: argparse.Namespace) -> int:
    import torch

    from leadrrg.config import apply_overrides
    from leadrrg.train import load_run

    check_run_dir(Path(args.run))
    for text in args.overrides:
        if not text.strip().startswith(OVERRIDABLE):
            raise LeadrrgError(
                f"--set {text!r}: only decode.* and data.* can be changed at generation time (the model is trained)"
            )
    if args.limit is not None and args.limit < 1:
        raise LeadrrgError(f"--limit is {args.limit}; expected a positive number of studies")
    if args.batch_size is not None and args.batch_size < 1:
        raise LeadrrgError(f"--batch-size is {args.batch_size}; expected a positive number")
    if args.images is None and not args.out:
        raise LeadrrgError(
            "--out is required when generating for a data split (or give --images for one study)"
        )
    if args.out:
        check_output_file(args.out, "--out")
    device = resolve_device(args.device)
    model, tokenizer, config = load_run(args.run, device=device)
    config = apply_overrides(config, args.overrides)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.images is not None:
        return generate_for_images(args, model, tokenizer, config, generator)
    return generate_for_split(args, model, tokenizer, config, generator)


def check_run_dir(run_dir: Path) -> None:
    problem = path_problem(run_dir, "directory")
    if problem:
        raise LeadrrgError(
            f"run directory {run_dir} {problem}; expected the --out directory of leadrrg train"
        )
    if not (run_dir / "model.safetensors").is_file():
        raise LeadrrgError(
            f"run directory {run_dir} has no model.safetensors; train it first (leadrrg train) or wait for its "
            "first checkpoint"
        )


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LeadrrgError(f"--device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LeadrrgError(f"--device {name}: CUDA is not available on this machine")
    return device


def generate_for_split(args, model, tokenizer, config, generator) -> int:
    from leadrrg.data.dataset import raise_on_bad_images
    from leadrrg.data.manifests import load_studies
    from leadrrg.io import atomic_open
    from leadrrg.predict import generate_split

    if args.data:
        config.data.root = args.data
    if args.format:
        config.data.format = args.format
    if not config.data.root:
        raise LeadrrgError("the run's config has no data.root; give the data root with --data DIR")
    studies = load_studies(config.data, args.split)
    if args.limit is not None:
        studies = studies[: args.limit]
    if not studies:
        raise LeadrrgError(f"split {args.split!r} of {config.data.root} has no studies to generate for")
    raise_on_bad_images(studies, config.model.max_views, f"split {args.split!r} of {config.data.root}")
    records = generate_split(
        model,
        tokenizer,
        config,
        studies,
        config.decode,
        evidence=args.evidence,
        batch_size=args.batch_size,
        generator=generator,
        progress=sys.stderr.isatty(),
    )
    with atomic_open(args.out, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, allow_nan=False) + "\n")
    decode = config.decode
    print(
        f"wrote {len(records)} reports for split {args.split!r} of {config.data.root} to {args.out} "
        f"({decode.strategy} decoding{f', {decode.num_beams} beams' if decode.strategy == 'beam' else ''})"
    )
    return 0


def generate_for_images(args, model, tokenizer, config, generator) -> int:
    from leadrrg.data.dataset import StudyDataset
    from leadrrg.data.manifests import Study
    from leadrrg.decoding import expert_probs_sorted, generate_reports
    from leadrrg.predict import evidence_record

    max_views = config.model.max_views
    if len(args.images) > max_views:
        raise LeadrrgError(
            f"{len(args.images)} images given but this model reads at most {max_views} view(s) per study "
            "(model.max_views); give one study's views, frontal first"
        )
    paths = [str(Path(path).expanduser().resolve()) for path in args.images]
    for path in paths:
        problem = path_problem(path)
        if problem:
            raise LeadrrgError(f"image {path} {problem}; expected a PNG, JPEG or DICOM file")
    study = Study(id="study", split="", images=paths, report="")
    item = StudyDataset([study], config.model.vision, max_views, train=False)[0]  # LeadrrgError if unreadable
    (report,) = generate_reports(
        model,
        tokenizer,
        item["images"][None],
        item["view_mask"][None],
        config.decode,
        return_evidence=args.evidence,
        generator=generator,
    )
    ranked = expert_probs_sorted(report)
    if args.json:
        out = {"images": paths, "generated": report.text, "expert_probs": dict(ranked) or None}
        if args.evidence:
            out["evidence"] = evidence_record(report, tokenizer)
        print(json.dumps(out, indent=2))
        return 0
    print(report.text)
    if ranked:
        print()
        print("Expert probabilities:")
        width = max(len(name) for name, _ in ranked)
        for name, prob in ranked:
            print(f"  {name:<{width}}  {prob:.3f}")
    if args.evidence and report.gates is not None:
        print()
        print("Mean gate per layer:", " ".join(f"{g:.3f}" for g in report.gates.mean(dim=0).tolist()))
    return 0
