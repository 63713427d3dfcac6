"""Open-i's own IU X-Ray release, read by `--format iu_xray` when the root has no annotation file.

    ROOT/ecgen-radiology/1.xml ...          NLMCXR_reports.tgz unpacked (3,955 Open-i XML reports), or
    ROOT/NLMCXR_reports.tgz                 the archive itself
    ROOT/CXR1_1_IM-0001-3001.png ...        NLMCXR_png.tgz unpacked: one flat folder of 7,470 PNGs (also read
                                            from ROOT/NLMCXR_png/, ROOT/images/ or ROOT/png/)

A study is one report (`uId`, e.g. `CXR1`); its views are its `parentImage` ids as `<id>.png`, frontal first
as Open-i lists them. The XML is parsed by `leadrrg.data.synth.iu_reports` (FINDINGS and IMPRESSION
AbstractText). Reports without an image (104 in the release) are left out and counted. Open-i ships no split:
`data.split_file` gives one (e.g. R2Gen's annotation.json: its ids are matched to the image names), else each
study lands in train / val / test (70 / 10 / 20 %) by a hash of its uid, the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

from leadrrg.config import DataConfig
from leadrrg.data.readers._labels import apply_label_file
from leadrrg.data.records import ReadResult, Record, data_file, resolve_image_path
from leadrrg.data.splits import hash_split, no_split_warning
from leadrrg.data.synth.iu_reports import IuReport, parse_report_xml, read_reports_archive
from leadrrg.errors import LeadrrgError

XML_DIR = "ecgen-radiology"
ARCHIVE = "NLMCXR_reports.tgz"
IMAGE_DIRS = ("", "NLMCXR_png", "images", "png")
PROBE = 50  # reports whose images decide the image folder


def is_openi_root(root: Path) -> bool:
    return (root / XML_DIR).is_dir() or (root / ARCHIVE).is_file()


def read_reports(root: Path) -> tuple[list[IuReport], Path]:
    """The reports of ROOT/ecgen-radiology/*.xml (or of ROOT/NLMCXR_reports.tgz) and where they came from."""
    folder = root / XML_DIR
    if not folder.is_dir():
        return read_reports_archive(root / ARCHIVE), root / ARCHIVE
    reports = []
    for path in sorted(folder.glob("*.xml")):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LeadrrgError(
                f"Open-i report {path} cannot be read ({exc.strerror}); expected an XML file"
            ) from None
        reports.append(parse_report_xml(data, str(path)))
    if not reports:
        raise LeadrrgError(f"{folder} holds no .xml files; expected Open-i's ecgen-radiology/*.xml reports")
    return reports, folder


def _image_dir(root: Path, reports: list[IuReport]) -> Path:
    for name in IMAGE_DIRS:
        base = root / name if name else root
        if any((base / f"{i}.png").is_file() for r in reports[:PROBE] for i in r.image_ids):
            return base
    return root


def read_openi(data: DataConfig) -> ReadResult:
    root = Path(data.root)
    reports, source = read_reports(root)
    base = _image_dir(root, reports)
    result = ReadResult([])
    without = 0
    for report in reports:
        if not report.image_ids:
            without += 1
            continue
        where = f"{source} report {report.uid}"
        images = [resolve_image_path(base, f"{image}.png", data, where) for image in report.image_ids]
        result.records.append(
            Record(report.uid, hash_split(report.uid), images, report.findings, report.impression)
        )
    result.notes.append(
        f"recognised Open-i's IU X-Ray release: {len(reports)} XML reports in {source}, images "
        f"<parentImage id>.png in {base}; FINDINGS -> findings, IMPRESSION -> impression"
    )
    if without:
        result.notes.append(f"{without} reports name no image (no parentImage) and are left out")
    if not data.split_file:
        result.warnings.append(no_split_warning("Open-i", "uid", " (e.g. R2Gen's annotation.json)"))
    if data.label_file:
        apply_label_file(result, data, data_file(root, data.label_file), "id")
    return result
