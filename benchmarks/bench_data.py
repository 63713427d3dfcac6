"""Data loading at MIMIC-CXR scale: time and peak RSS of each start-up phase of training on an R2Gen-layout root.

Builds (or reuses) a placeholder root of N entries (`make_mimic_root.py`; default 50,000, a few minutes here)
and runs each phase in a fresh process, so each peak RSS is that phase's own (it includes reading the root):

- `data check`: `check_data` as `leadrrg data check --format mimic_cxr` runs it (headers of every split);
- `load`: the train and val studies (`load_split_studies` without labels, as `build_task` reads them);
- `label`: the rule-based labeler fills the labels of train and val, cold cache (`labels_from_labeler`);
- `label warm`: the same with the cache the cold run wrote;
- `banks`: the counterfactual sentence banks of the training reports (`CounterfactualEditor`);
- `headers`: the header check of every train and val image (`find_bad_images`).

Times grow linearly with N (each phase is one pass over entries, reports, sentences or images): multiply by
276,778 / N for MIMIC-CXR.

    python benchmarks/bench_data.py --entries 50000 [--root DIR] [--phases data_check,label]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = ("data_check", "load", "label", "label_warm", "banks", "headers")


def _config(root: str):
    from leadrrg.config import load_preset

    config = load_preset("mimic_cxr")
    config.data.root = root
    return config


def _studies(root: str) -> tuple[list, list]:
    from leadrrg.data.manifests import load_studies
    from leadrrg.train.build import TRAIN_SPLIT, VAL_SPLIT

    data = _config(root).data
    return load_studies(data, TRAIN_SPLIT), load_studies(data, VAL_SPLIT)


def _peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_phase(phase: str, root: str, cache: Path) -> dict:
    """Run one phase in this process -> {"seconds" of the phase alone, "count", "import_mb": peak RSS after the
    imports, "peak_rss_mb": peak RSS of the process (reading the root included)}."""
    if phase == "data_check":  # as the command: no torch
        from leadrrg.data.check import check_data
    else:
        from leadrrg.data.counterfactual import CounterfactualEditor
        from leadrrg.data.dataset import find_bad_images
        from leadrrg.data.labels import labels_from_labeler
        from leadrrg.labeler.rules import label_text
        from leadrrg.train.build import load_split_studies  # noqa: F401  (the import cost training pays)

        label_text("warm up the labeler's patterns.")
    imported = _peak_mb()
    start = time.perf_counter()
    if phase == "data_check":
        count = check_data(_config(root).data).studies
    else:
        train, val = _studies(root)
        count = len(train) + len(val)
        if phase != "load":
            start = time.perf_counter()
        if phase in ("label", "label_warm"):
            train, val = labels_from_labeler(train, cache), labels_from_labeler(val, cache)
        elif phase == "banks":
            CounterfactualEditor([s.report for s in train], _config(root).model.experts.names)
            count = len(train)
        elif phase == "headers":
            find_bad_images(train + val, _config(root).model.max_views)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "count": count, "import_mb": imported, "peak_rss_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=50_000, help="annotation entries (MIMIC-CXR: 276,778)")
    parser.add_argument(
        "--root", help="an existing placeholder root (else one is built in a temporary folder)"
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help="comma-separated, of: " + ", ".join(PHASES)
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase and print JSON
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.root, Path(args.cache))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(HERE))
        from make_mimic_root import given_or_built

        root = given_or_built(args.root, tmp, args.entries)
        cache = Path(tmp) / "labels.csv"
        print(f"{'phase':<12}{'seconds':>9}{'items':>9}{'peak RSS MB':>13}{'after imports':>15}")
        for phase in args.phases.split(","):
            command = [sys.executable, __file__, "--phase", phase, "--root", root, "--cache", str(cache)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                sys.exit(f"phase {phase} failed:\n{result.stderr}")
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{phase:<12}{row['seconds']:>9.2f}{row['count']:>9}{row['peak_rss_mb']:>13}{row['import_mb']:>15}",
                flush=True,
            )


if __name__ == "__main__":
    main()
