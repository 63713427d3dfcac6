"""Which release a data root holds, for the formats whose data sets ship in several layouts (`--format iu_xray`,
`--format chexpert_plus`; `mimic_cxr` tells R2Gen's file from PhysioNet's in `readers.mimic_cxr`).

An annotation file named by `data.annotation_file`, or present in ROOT, is read as R2Gen's (or study-keyed /
LLaVA JSON, `readers.study_json`); otherwise the root's own files say which release it is. The reader's first
note names the layout recognised, and `data check` prints it.
"""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.readers._labels import apply_label_file
from leadrrg.data.readers.chexpert_plus import CSV_GLOB, image_resolver, read_chexpert_plus
from leadrrg.data.readers.iu_kaggle import is_kaggle_root, read_iu_kaggle
from leadrrg.data.readers.openi import is_openi_root, read_openi
from leadrrg.data.readers.r2gen import ANNOTATION_NAME, read_annotation, read_iu_xray
from leadrrg.data.records import ReadResult, Record, check_inside_root, data_file
from leadrrg.data.text import split_findings_impression

REXRANK_CHEXPERT = "ReXRank_CheXpertPlus.json"


def read_iu_release(data: DataConfig) -> ReadResult:
    """R2Gen's annotation.json (or another JSON named by data.annotation_file), Open-i's XML release, Kaggle's
    CSV pair, or the one *annotation*.json in ROOT, whichever ROOT holds first in that order."""
    root = Path(data.root)
    if not data.annotation_file and not (root / ANNOTATION_NAME).exists():
        if is_openi_root(root):
            return read_openi(data)
        if is_kaggle_root(root):
            return read_iu_kaggle(data)
    return read_iu_xray(data)


def read_chexpert_release(data: DataConfig) -> ReadResult:
    """CheXpert Plus's df_chexpert_plus_*.csv; or, named by data.annotation_file (or ROOT/ReXRank_CheXpertPlus.json
    when there is no CSV), a study-keyed JSON such as ReXrank's CheXpert Plus test set."""
    root = Path(data.root)
    json_path = data_file(root, data.annotation_file) if data.annotation_file else root / REXRANK_CHEXPERT
    if data.annotation_file or (not any(root.glob(CSV_GLOB)) and json_path.is_file()):
        return _read_chexpert_json(data)
    return read_chexpert_plus(data)


def _read_chexpert_json(data: DataConfig) -> ReadResult:
    root = Path(data.root)
    if not data.annotation_file:
        data = _with_annotation(data, REXRANK_CHEXPERT)
    annotation = read_annotation(data)
    result = annotation.result
    resolve, note = image_resolver(root, [entry.images[0] for entry in annotation.entries])
    if note:
        result.notes.append(note)
    for entry in annotation.entries:
        images = [resolve(name) for name in entry.images]
        for name, image in zip(entry.images, images):
            check_inside_root(Path(image), data, entry.where, name)
        findings, impression = entry.sections or split_findings_impression(entry.report)
        record = Record(entry.id, entry.split, images, findings, impression, stored_split=entry.stored_split)
        record.label_key = entry.images[0]
        result.records.append(record)
    if data.label_file:
        apply_label_file(result, data, data_file(root, data.label_file), "path_to_image")
    return result


def _with_annotation(data: DataConfig, name: str) -> DataConfig:
    import dataclasses

    return dataclasses.replace(data, annotation_file=name)
