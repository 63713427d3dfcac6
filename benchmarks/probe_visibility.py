"""How much of a SynthCXR image each finding changes: the same patient rendered with and without it.

`render_image` draws the patient (anatomy, pose, exposure, noise) and the findings from separate child streams of
one generator, so the same seed with and without a finding gives the same patient. For each finding alone, over
`--patients` patients, this prints the median number of pixels (counted at 128 px) that change by more than
`--delta` grey levels and the median largest change: what an expert has to find, against what it is trained on.

    .venv/bin/python benchmarks/probe_visibility.py [--sizes 128,256] [--patients 40] [--delta 8]
"""

from __future__ import annotations

import argparse

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.data.synth.prior import findings_from_labels
from leadrrg.data.synth.render import render_image
from leadrrg.data.synth.types import Findings, SynthConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="image sides in pixels, comma-separated")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument(
        "--delta", type=float, default=8.0, help="grey levels a pixel must change by to count"
    )
    args = parser.parse_args()
    config = SynthConfig()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'finding':<28}" + "".join(f"{f'{s} px: pixels / max':>24}" for s in sizes))
    for k, name in enumerate(OBSERVATIONS[1:], start=1):
        cells = []
        for size in sizes:
            changed, largest = [], []
            for patient in range(args.patients):
                labels = np.zeros(len(OBSERVATIONS))
                labels[k] = 1
                findings = findings_from_labels(labels, np.random.default_rng(1000 + patient), config)
                with_it = render_image(findings, size, np.random.default_rng(patient)).astype(np.float32)
                without = render_image(Findings(), size, np.random.default_rng(patient)).astype(np.float32)
                diff = np.abs(with_it - without)
                changed.append((diff > args.delta).sum() * (128 / size) ** 2)  # in 128-px pixels
                largest.append(diff.max())
            cells.append(f"{np.median(changed):>14.0f} / {np.median(largest):>5.0f}")
        print(f"{name:<28}" + "".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
