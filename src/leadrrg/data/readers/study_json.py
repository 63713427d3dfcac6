"""JSON layouts other than R2Gen's {split: [entry]} that name the same things, turned into R2Gen entries so the
`iu_xray` / `mimic_cxr` / `chexpert_plus` readers read them as downloaded:

- **study-keyed** (ReXrank's `ReXRank_IUXray_test.json`, `ReXRank_MIMICCXR_test.json`, `ReXRank_CheXpertPlus.json`;
  ReXGradient-style metadata): {study_id: {"image_path": [...], "section_findings", "section_impression",
  "split"?, "frontal_lateral"?: [...], ...}}. NaN (JSON `NaN`) or missing sections are empty; a leading `/` on an
  image path means "relative to the image root" (ReXrank's MIMIC paths `/p10/...` lie under `files/`); views are
  ordered frontal first when `frontal_lateral` says which is which. An entry without `split` takes the first folder
  of its image path when that is a split name (CheXpert Plus's `valid/...`), else `test` (ReXrank's files are
  test sets).
- **LLaVA conversations** (LLaVA-Rad, LLaVA-Med): [{"id", "image": path or [paths], "conversations": [{"from":
  "human", ...}, {"from": "gpt", "value": report}]}]: the first `gpt` turn is the report. Entries without
  `split` take the file's name when it is a split name (`train.json`, `test.json`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from leadrrg.data.splits import CANONICAL_SPLITS, SPLIT_ALIASES
from leadrrg.errors import LeadrrgError

SECTIONS_KEY = "__sections__"  # (findings, impression) of a converted entry; its `report` is then unused
LATERAL = ("lateral", "left lateral", "ll", "lat")


def is_study_keyed(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def is_conversations(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(e, dict) and isinstance(e.get("conversations"), list) for e in value)
    )


def split_of_name(name: str) -> str | None:
    """`name` (a file stem or a folder) as a split name when it is one (`train`, `valid`, `test`, ...)."""
    key = name.strip().lower()
    return name.strip() if key in CANONICAL_SPLITS or key in SPLIT_ALIASES else None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value.strip() if isinstance(value, str) else ""


def study_keyed_splits(path: Path, value: dict[str, dict]) -> dict[str, list]:
    """{split: [R2Gen entry]} of a study-keyed JSON file (see the module doc)."""
    splits: dict[str, list] = {}
    for key, item in value.items():
        images = item.get("image_path")
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise LeadrrgError(
                f"{path}: study {key!r}: image_path is {images!r}; expected a study-keyed entry with a list of "
                "image paths (ReXrank's layout)"
            )
        views = item.get("frontal_lateral")
        order = list(range(len(images)))
        if isinstance(views, list) and len(views) == len(images):
            order.sort(key=lambda i: str(views[i]).strip().lower() in LATERAL)
        images = [images[i].lstrip("/") for i in order]
        split = item.get("split") if isinstance(item.get("split"), str) else None
        split = split or split_of_name(Path(images[0]).parts[0]) or "test"
        entry = {**item, "id": key, "report": _text(item.get("report")), "image_path": images}
        entry[SECTIONS_KEY] = (_text(item.get("section_findings")), _text(item.get("section_impression")))
        splits.setdefault(split, []).append(entry)
    return splits


def conversation_splits(path: Path, value: list[dict]) -> dict[str, list]:
    """{split: [R2Gen entry]} of a LLaVA conversation file (see the module doc)."""
    file_split = split_of_name(path.stem)
    splits: dict[str, list] = {}
    for index, item in enumerate(value):
        where = f"{path}: entry {index}"
        report = next(
            (t.get("value") for t in item["conversations"] if isinstance(t, dict) and t.get("from") == "gpt"),
            None,
        )
        if not isinstance(report, str):
            raise LeadrrgError(
                f"{where} has no 'gpt' turn with text; expected LLaVA conversations whose gpt turn is the report"
            )
        split = item.get("split") if isinstance(item.get("split"), str) else file_split
        if split is None:
            raise LeadrrgError(
                f"{where} names no split and the file name {path.name!r} is not a split name; expected a 'split' "
                "key, or a file named train.json / val.json / test.json (give several with "
                "data.annotation_file=train.json,test.json)"
            )
        image = item.get("image")
        entry = {**item, "id": item.get("id", f"{path.stem}-{index}"), "report": report, "image_path": image}
        splits.setdefault(split, []).append(entry)
    return splits
