"""`leadrrg explain`: one study's report and its evidence as one self-contained HTML file (and a PNG heatmap).

    leadrrg explain --run RUN --images frontal.png [lateral.dcm] --out study.html [--png heatmap.png]

The HTML is the service's web page with the result and the images inlined: it opens offline. The experts with
their thresholds (marking those the report contradicts) and the table of tokens, gates and top experts are also
printed.

`--png` needs a model that injects the experts layer-wise (LEAD, `model.injection.fusion=layerwise`): for any
other model it is refused (exit 2) before the model is loaded, and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from leadrrg.commands import add_overrides_argument, add_run_argument, check_run_dir, resolve_device
from leadrrg.config import load_run_config
from leadrrg.errors import LeadrrgError
from leadrrg.io import atomic_open, atomic_write_text
from leadrrg.runs.provenance import BASE_PATH_OVERRIDES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_argument(parser, "trained run directory (written by leadrrg train)")
    parser.add_argument(
        "--images", nargs="+", required=True, metavar="IMAGE", help="one study's views, frontal first"
    )
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--png", help="also write the tokens x layers gate heatmap as a PNG")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    add_overrides_argument(parser, "typed override of a decode.* field (repeatable)")


def run(args: argparse.Namespace) -> int:
    # torch, numpy and PIL: imported here, not by `leadrrg --help`
    from leadrrg.inference.api import load
    from leadrrg.inference.inputs import to_gray
    from leadrrg.runs.files import check_trained_overrides
    from leadrrg.serve.render import evidence_table, expert_table, explain_html, heatmap_png, preview_png

    check_trained_overrides(args.overrides, ("decode.", *BASE_PATH_OVERRIDES), "here")
    check_run_dir(Path(args.run))
    if args.png:
        check_png_possible(Path(args.run))
    generator = load(args.run, device=resolve_device(args.device), overrides=args.overrides)
    if len(args.images) > generator.max_views:
        raise LeadrrgError(
            f"{len(args.images)} images given but this model reads at most {generator.max_views} view(s) per study"
        )
    views = [to_gray(path) for path in args.images]
    images, view_mask = generator.prepare_arrays(views)
    (result,) = generator.decode(images[None], view_mask[None], None, evidence=True)
    if args.png and not (result.evidence and result.evidence["layers"]):  # before writing anything
        raise LeadrrgError(
            f"--png: {args.run} has no layer-wise gates to draw; nothing was written (drop --png for the HTML)"
        )
    names = [Path(path).name for path in args.images]
    html = explain_html(
        result.to_dict(), [(n, preview_png(v)) for n, v in zip(names, views)], Path(args.run).name
    )
    atomic_write_text(args.out, html)
    print(result.report_display)
    if result.expert_probs:
        print()
        print(expert_table(result.expert_probs, result.thresholds, result.contradictions))
    if result.evidence and result.evidence["layers"]:
        print()
        print(evidence_table(result.evidence))
    print(f"\nwrote {args.out}")
    if args.png:
        with atomic_open(args.png, "wb") as handle:
            handle.write(heatmap_png(result.evidence))
        print(f"wrote {args.png}")
    return 0


def check_png_possible(run: Path) -> None:
    """Refuse `--png` (LeadrrgError naming the run and its fusion) for a model without layer-wise gates."""
    injection = load_run_config(run / "config.json").model.injection
    if not injection.layerwise:
        raise LeadrrgError(
            f"--png: {run} has model.injection.fusion={injection.fusion!r}, which has no layer-wise gates to "
            "draw; expected a layer-wise model (fusion=layerwise, LEAD). Nothing was written: drop --png to "
            "write the HTML alone"
        )
