"""The library side of `leadrrg demo`: its SynthCXR data (made once, refused when stale) and the flip example
(one image, one expert forced off and on, the two reports LEAD writes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadrrg.constants import OBSERVATIONS
from leadrrg.data.manifests import load_studies
from leadrrg.data.records import Study
from leadrrg.data.synth.generate import synthesize
from leadrrg.errors import LeadrrgError
from leadrrg.inference.api import ReportGenerator
from leadrrg.inference.calibrate import with_run_thresholds
from leadrrg.inference.predict import generate_split
from leadrrg.io import atomic_write_text, read_json_object
from leadrrg.runs.files import load_run, training_device

SYNTH_META = "synth_meta.json"  # the size and seed the demo's data was synthesised with


def check_demo_data(data_dir: Path, counts: dict[str, int], size: int, seed: int) -> None:
    """Refuse to reuse SynthCXR data synthesised with other counts, size or seed (a stale demo)."""
    found: dict[str, int] = {}
    with open(data_dir / "manifest.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                split = json.loads(line)["split"]
                found[split] = found.get(split, 0) + 1
    meta_path = data_dir / SYNTH_META
    meta = (
        read_json_object(meta_path, "demo data record", '{"size": ..., "seed": ...}')
        if meta_path.is_file()
        else {}
    )
    asked = {"counts": counts, "size": size, "seed": seed}
    have = {"counts": found, "size": meta.get("size", size), "seed": meta.get("seed", seed)}
    if have != asked:
        raise LeadrrgError(
            f"{data_dir} holds SynthCXR data made with {have}, not the {asked} asked for; "
            "use another --out or delete that folder"
        )


def synthesize_demo_data(data_dir: Path, counts: dict[str, int], size: int, seed: int, workers: int) -> None:
    """SynthCXR into `data_dir`, with the record `check_demo_data` reads."""
    synthesize(data_dir, counts, size=size, seed=seed, workers=workers, config=None, progress=True)
    atomic_write_text(data_dir / SYNTH_META, f'{{"size": {size}, "seed": {seed}}}\n')


@dataclass
class FlipExample:
    study: Study
    finding: str
    own_p: float  # the finding's expert probability on the image
    forced_off: str  # the report with the finding's p forced to 0
    forced_on: str  # ... and to 1


def flip_example(run_dir: Path, split: str, search: int = 32) -> FlipExample | None:
    """One image, one expert forced off and on: the two reports LEAD writes (the first of `search` studies with
    a true finding its expert sees); None when there is no such study."""
    model, tokenizer, config = load_run(run_dir)
    config = with_run_thresholds(
        config, run_dir
    )  # the thresholds calibrated on val, as leadrrg.load reads them
    model.to(training_device(config))  # generate where the run trained, not on the CPU
    generator = ReportGenerator(model, tokenizer, config)
    studies = load_studies(config.data, split)[:search]
    records = generate_split(generator, studies, evidence=True)
    names = list(config.model.experts.names)
    pick = None
    for index, record in enumerate(records):  # a study with a finding its experts see
        probs = record.get("expert_probs") or {}
        truth = [n for n, v in zip(OBSERVATIONS, record.get("labels") or []) if v == 1 and n != "No Finding"]
        seen = [n for n in truth if n in names and probs.get(n, 0.0) > 0.5]
        if seen:
            pick = (index, seen[0])
            break
    if pick is None:
        return None
    index, finding = pick
    study = studies[index]
    own = np.array([[records[index]["expert_probs"][n] for n in names]], dtype=np.float32)
    reports = {}
    for value in (0.0, 1.0):
        forced = own.copy()
        forced[0, names.index(finding)] = value
        reports[value] = generate_split(generator, [study], expert_probs=forced)[0]
    own_p = float(own[0, names.index(finding)])
    return FlipExample(study, finding, own_p, reports[0.0]["generated"], reports[1.0]["generated"])
