"""A MIMIC-CXR-sized placeholder root in R2Gen's layout, for data-loading benchmarks.

`ROOT/annotation.json` ({"train": [...], "val": [...], "test": [...]}, one entry per image with `id`, `study_id`,
`subject_id`, `report`, `image_path`, `split`) and `ROOT/images/p1X/p<subject>/s<study>/<dicom_id>.jpg`. The split
shares are R2Gen's MIMIC-CXR (270,790 / 2,130 / 3,858 of 276,778 entries); a study has 1-3 entries (about 1.2 on
average, as R2Gen's file) that share its report. Reports are SynthCXR's (`leadrrg.data.synth.reports`) drawn from
the train prior, so the labeler and the counterfactual banks see report-like text. No label CSV: R2Gen's MIMIC
annotation carries none, so training fills labels with the rule-based labeler. Images are one tiny valid JPEG
(64x64, a few hundred bytes), written once per entry, enough for the header check.

    python benchmarks/make_mimic_root.py /tmp/mimic --entries 276778
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np

MIMIC_ENTRIES = {"train": 270_790, "val": 2_130, "test": 3_858}
VIEWS_PER_STUDY = (1, 2, 3)
VIEW_WEIGHTS = (0.82, 0.16, 0.02)  # about 1.2 entries per study


def tiny_jpeg(size: int = 64) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


def split_counts(entries: int) -> dict[str, int]:
    """R2Gen's MIMIC-CXR split shares scaled to `entries` (train takes the rounding)."""
    total = sum(MIMIC_ENTRIES.values())
    val = max(1, round(entries * MIMIC_ENTRIES["val"] / total))
    test = max(1, round(entries * MIMIC_ENTRIES["test"] / total))
    return {"train": entries - val - test, "val": val, "test": test}


def make_mimic_root(root: str | Path, entries: int = 50_000, seed: int = 0) -> Path:
    """Write the placeholder root with `entries` annotation entries (images) and return it."""
    from leadrrg.data.synth.prior import sample_findings
    from leadrrg.data.synth.reports import write_report
    from leadrrg.data.synth.types import SynthConfig

    root = Path(root)
    rng = np.random.default_rng(seed)
    config = SynthConfig()
    image = tiny_jpeg()
    annotation: dict[str, list] = {}
    study = 0
    for split, count in split_counts(entries).items():
        items = annotation.setdefault(split, [])
        while len(items) < count:
            study += 1
            subject_id, study_id = 10_000_000 + study // 3, 50_000_000 + study
            report = write_report(sample_findings(rng, config), rng, config)
            views = min(int(rng.choice(VIEWS_PER_STUDY, p=VIEW_WEIGHTS)), count - len(items))
            folder = f"p{str(subject_id)[:2]}/p{subject_id}/s{study_id}"
            (root / "images" / folder).mkdir(parents=True, exist_ok=True)
            for view in range(views):
                dicom_id = f"{study:08x}-{view:04x}-0000-0000-000000000000"
                relative = f"{folder}/{dicom_id}.jpg"
                (root / "images" / relative).write_bytes(image)
                items.append(
                    {
                        "id": dicom_id,
                        "study_id": study_id,
                        "subject_id": subject_id,
                        "report": report,
                        "image_path": [relative],
                        "split": split,
                    }
                )
    (root / "annotation.json").write_text(json.dumps(annotation))
    return root


def given_or_built(root: str | None, tmp: str | Path, entries: int) -> str:
    """`root` when given, else a new `entries`-entry root built under `tmp` (its build time printed)."""
    if root is not None:
        return root
    started = time.perf_counter()
    built = make_mimic_root(Path(tmp) / "mimic", entries)
    print(f"built a {entries:,}-entry root in {time.perf_counter() - started:.0f} s")
    return str(built)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="directory to write (created)")
    parser.add_argument("--entries", type=int, default=50_000, help="annotation entries (MIMIC-CXR: 276,778)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    root = make_mimic_root(args.root, args.entries, args.seed)
    print(f"wrote {args.entries:,} entries to {root} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
