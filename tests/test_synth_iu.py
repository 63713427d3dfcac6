"""SynthCXR-IU: IU X-Ray report parsing, the wheel and its cache, the data set, the CLI.

The fast tests build a fake `torchxrayvision` wheel (a zip) holding a small `NLMCXR_reports.tgz` of Open-i
XML reports with the real files' structure and invented text. The slow test uses the real wheel.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leadrrg.cli import main
from leadrrg.constants import OBSERVATIONS
from leadrrg.data.synth import iu as synth_iu
from leadrrg.data.synth import iu_reports
from leadrrg.data.synth.generate import Findings
from leadrrg.data.synth.iu import IU_SPLITS, image_labels, iu_split, label_statistics, synthesize_iu
from leadrrg.data.synth.iu_reports import IU_MEMBER, IuReport, iu_archive, load_iu_reports, parse_report_xml
from leadrrg.errors import LeadrrgError
from leadrrg.labeler import label_reports

# uid -> (findings, impression, number of images); None leaves the section's element out.
REPORTS: dict[int, tuple[str | None, str | None, int]] = {
    1: (
        "The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion.",
        "Normal chest.",
        2,
    ),
    2: (
        "The heart is enlarged. Small bilateral pleural effusions. Mild interstitial edema.",
        "Heart failure.",
        2,
    ),
    3: ("Large right pneumothorax. No pleural effusion.", "Right pneumothorax.", 1),
    4: (None, "No acute cardiopulmonary abnormality.", 2),  # no findings section: skipped
    5: ("", "Stable chest.", 1),  # empty findings element: skipped
    6: ("Right lower lobe consolidation consistent with pneumonia. Heart size normal.", "Pneumonia.", 2),
    7: ("Lungs are clear. Left basilar opacity may represent atelectasis.", "No acute disease.", 0),
    8: ("Left-sided pacemaker in place. Acute fracture of the right 6th rib.", "Rib fracture.", 2),
    9: ("Calcified granuloma in the left upper lobe. No focal consolidation.", "No active disease.", 1),
}
WRITTEN = [f"CXR{n}" for n in (1, 2, 3, 6, 7, 8, 9)]  # those with findings, in uid order


def open_i_xml(uid: int, findings: str | None, impression: str | None, images: int) -> str:
    """An Open-i report with the structure of `ecgen-radiology/<n>.xml` (text invented)."""
    abstract = ['<AbstractText Label="COMPARISON">None.</AbstractText>']
    abstract.append('<AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>')
    if findings is not None:
        abstract.append(f'<AbstractText Label="FINDINGS">{findings}</AbstractText>')
    if impression is not None:
        abstract.append(f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>')
    parents = "".join(
        f'<parentImage id="CXR{uid}_IM-00{uid:02d}-{k}001"><figureId>F{k}</figureId>'
        f'<caption>Xray Chest PA and Lateral</caption><panel type="single">'
        f"<url>/hadoop/storage/radiology/extract/CXR{uid}_IM-00{uid:02d}-{k}001.jpg</url>"
        f"<imgModality>7</imgModality></panel></parentImage>"
        for k in range(1, images + 1)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <pmcId id="{uid}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{uid}"/>
   <licenseType>open-access</licenseType>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            {"".join(abstract)}
         </Abstract>
         <Affiliation>Indiana University</Affiliation>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>{"normal" if uid == 1 else "Cardiomegaly/mild"}</major>
      <automatic>heart</automatic>
   </MeSH>
   {parents}
</eCitation>
"""


def reports_tgz(reports: dict[int, tuple[str | None, str | None, int]] = REPORTS) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        folder = tarfile.TarInfo("ecgen-radiology")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for uid, (findings, impression, images) in reports.items():
            data = open_i_xml(uid, findings, impression, images).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{uid}.xml")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)  # the same bytes on every call


def fake_wheel(path: Path, members: dict[str, bytes] | None = None) -> Path:
    members = {IU_MEMBER: reports_tgz()} if members is None else members
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("torchxrayvision/__init__.py", "")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return fake_wheel(tmp_path_factory.mktemp("wheel") / "torchxrayvision-1.5.7-py3-none-any.whl")


@pytest.fixture(scope="module")
def dataset(wheel: Path, tmp_path_factory) -> Path:
    return synthesize_iu(tmp_path_factory.mktemp("iu") / "data", size=64, seed=3, workers=1, wheel=wheel)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------
# Reports


def test_parse_open_i_report():
    report = parse_report_xml(open_i_xml(2, *REPORTS[2]).encode(), "2.xml")
    assert report.uid == "CXR2"
    assert report.findings == REPORTS[2][0] and report.impression == "Heart failure."
    assert report.indication == "XXXX-year-old with cough." and report.comparison == "None."
    assert report.image_ids == ("CXR2_IM-0002-1001", "CXR2_IM-0002-2001")
    assert report.mesh == ("Cardiomegaly/mild",)
    assert parse_report_xml(open_i_xml(4, *REPORTS[4]).encode()).findings == ""
    assert parse_report_xml(open_i_xml(7, *REPORTS[7]).encode()).image_ids == ()
    with pytest.raises(LeadrrgError, match="not valid XML"):
        parse_report_xml(b"<eCitation><uId", "bad.xml")
    with pytest.raises(LeadrrgError, match="uId"):
        parse_report_xml(b"<eCitation><title>x</title></eCitation>", "nouid.xml")


def test_load_reports_from_wheel_sorted_by_uid(wheel: Path):
    reports, provenance = load_iu_reports(wheel=wheel, log=lambda m: None)
    assert [r.uid for r in reports] == [f"CXR{n}" for n in sorted(REPORTS)]
    assert provenance["source"] == "torchxrayvision==1.5.7" and provenance["wheel"] == wheel.name
    assert provenance["tgz_sha256"] == hashlib.sha256(reports_tgz()).hexdigest()


# --------------------------------------------------------------------------------------------------
# The data set


def test_layout_and_manifest(dataset: Path):
    records = _manifest(dataset)
    assert [r["id"] for r in records] == WRITTEN  # reports without findings are skipped
    for record in records:
        assert record["split"] in IU_SPLITS and record["split"] == iu_split(record["id"])
        assert record["images"] == [f"images/{record['id']}/0.png"] and record["iu_uid"] == record["id"]
        with Image.open(dataset / record["images"][0]) as image:
            assert image.size == (64, 64) and image.mode == "L"
        assert isinstance(record["findings"], str) and record["report"] == record["findings"]
        assert len(record["labels"]) == 14 and set(record["labels"]) <= {0, 1}
    by_id = {r["id"]: r for r in records}
    assert by_id["CXR2"]["impression"] == "Heart failure."
    assert by_id["CXR2"]["iu_image_ids"] == ["CXR2_IM-0002-1001", "CXR2_IM-0002-2001"]
    annotation = json.loads((dataset / "annotation.json").read_text())
    assert set(annotation) == set(IU_SPLITS)
    entries = [e for split in IU_SPLITS for e in annotation[split]]
    assert sorted(e["id"] for e in entries) == sorted(WRITTEN)
    assert all(set(e) == {"id", "report", "image_path", "split"} for e in entries)
    summary = json.loads((dataset / "synth_iu.json").read_text())
    assert summary["provenance"]["tgz_sha256"] == hashlib.sha256(reports_tgz()).hexdigest()
    assert summary["counts"]["reports"] == len(REPORTS) and summary["counts"]["written"] == len(WRITTEN)
    assert sum(summary["counts"]["splits"].values()) == len(WRITTEN)
    assert "uncertain" in summary["label_policy"] and summary["size"] == 64 and summary["seed"] == 3
    assert not list(dataset.parent.glob(".*partial"))


def test_labels_follow_the_labeler_positives(dataset: Path):
    records = _manifest(dataset)
    texts = [f"{r['findings']} {r['impression']}" for r in records]
    expected = image_labels(label_reports(texts))
    got = np.array([r["labels"] for r in records])
    np.testing.assert_array_equal(got, expected)
    for record in records:  # the rendered attributes are exactly the present findings
        assert Findings.from_dict(record["rendered"]).labels().tolist() == record["labels"]
    by_id = {r["id"]: dict(zip(OBSERVATIONS, r["labels"])) for r in records}
    assert by_id["CXR1"]["No Finding"] == 1 and sum(by_id["CXR1"].values()) == 1
    assert by_id["CXR2"]["Cardiomegaly"] == by_id["CXR2"]["Pleural Effusion"] == by_id["CXR2"]["Edema"] == 1
    assert by_id["CXR3"]["Pneumothorax"] == 1 and by_id["CXR3"]["Pleural Effusion"] == 0
    assert by_id["CXR7"]["Atelectasis"] == 0  # uncertain -> absent
    assert by_id["CXR8"]["Fracture"] == by_id["CXR8"]["Support Devices"] == 1


def test_label_from_both_sections_or_only_the_target(tmp_path: Path):
    reports = [IuReport("CXR11", "Heart size normal. Lungs are clear.", "Small left pleural effusion.")]
    both = synthesize_iu(tmp_path / "both", size=48, reports=reports)
    target = synthesize_iu(tmp_path / "target", size=48, reports=reports, label_from="report")
    effusion = OBSERVATIONS.index("Pleural Effusion")
    assert _manifest(both)[0]["labels"][effusion] == 1 and _manifest(target)[0]["labels"][effusion] == 0
    summary = json.loads((target / "synth_iu.json").read_text())
    assert summary["label_from"] == "report" and "the findings section" in summary["label_policy"]
    assert summary["provenance"] == {"source": "reports given to synthesize_iu"}


def test_image_labels_policy():
    nan = np.nan
    labeler = np.array(
        [
            [
                nan,
                nan,
                1,
                -1,
                nan,
                0,
                nan,
                nan,
                nan,
                nan,
                nan,
                nan,
                nan,
                nan,
            ],  # cardiomegaly, uncertain opacity
            [nan, nan, nan, -1, nan, nan, nan, nan, nan, nan, nan, nan, nan, 1],  # devices, uncertain opacity
            [nan] * 14,  # nothing mentioned
        ]
    )
    out = image_labels(labeler)
    assert out[0].tolist() == [0, 0, 1] + [0] * 11
    assert out[1].tolist() == [1] + [0] * 12 + [1]  # only devices: No Finding
    assert out[2].tolist() == [1] + [0] * 13


def test_same_bytes_for_any_worker_count_and_per_uid_determinism(dataset: Path, wheel: Path, tmp_path: Path):
    again = synthesize_iu(tmp_path / "b", size=64, seed=3, workers=2, wheel=wheel)
    assert _files(again) == _files(dataset)
    part = synthesize_iu(tmp_path / "c", size=64, seed=3, workers=1, wheel=wheel, limit=3)
    assert [r["id"] for r in _manifest(part)] == WRITTEN[:3]
    for uid in WRITTEN[:3]:  # an image depends on (seed, uid) only, not on the other reports
        assert (part / "images" / uid / "0.png").read_bytes() == (
            dataset / "images" / uid / "0.png"
        ).read_bytes()
    other = synthesize_iu(tmp_path / "d", size=64, seed=4, workers=1, wheel=wheel)
    assert [(r["split"], r["labels"]) for r in _manifest(other)] == [
        (r["split"], r["labels"]) for r in _manifest(dataset)
    ]
    assert (other / "images/CXR2/0.png").read_bytes() != (dataset / "images/CXR2/0.png").read_bytes()


def test_split_is_a_stable_70_10_20_hash_of_the_uid():
    assert [iu_split(f"CXR{n}") for n in range(1, 9)] == [
        "test", "test", "train", "test", "train", "train", "test", "train"
    ]  # fmt: skip
    splits = np.array([iu_split(f"CXR{n}") for n in range(20000)])
    for split, fraction in zip(IU_SPLITS, (0.7, 0.1, 0.2)):
        assert abs((splits == split).mean() - fraction) < 0.015


def test_label_statistics_lift():
    labels = np.zeros((8, 14), dtype=np.int64)
    labels[:2, [2, 5]] = 1  # cardiomegaly with edema, twice
    labels[2:4, 3] = 1
    stats = label_statistics(labels, min_count=2)
    assert stats["prevalence"]["Cardiomegaly"] == 0.25
    assert stats["top_lift_pairs"][0] == {"pair": ["Cardiomegaly", "Edema"], "together": 2, "lift": 4.0}


def test_interrupted_run_leaves_nothing(wheel: Path, tmp_path: Path, monkeypatch):
    calls = []
    original = synth_iu._work

    def failing(task):
        calls.append(task)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return original(task)

    monkeypatch.setattr(synth_iu, "_work", failing)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        synthesize_iu(out, size=48, workers=1, wheel=wheel)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Errors and the cache


def test_bad_wheels(tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(LeadrrgError, match="does not exist.*torchxrayvision==1.5.7"):
        synthesize_iu(out, wheel=tmp_path / "missing.whl")
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(LeadrrgError, match="not a valid zip"):
        synthesize_iu(out, wheel=tmp_path / "junk.whl")
    with pytest.raises(LeadrrgError, match="no member 'torchxrayvision/data/NLMCXR_reports.tgz'"):
        synthesize_iu(out, wheel=fake_wheel(tmp_path / "empty.whl", {}))
    with pytest.raises(LeadrrgError, match="not a readable .tgz"):
        synthesize_iu(out, wheel=fake_wheel(tmp_path / "badtgz.whl", {IU_MEMBER: b"garbage"}))
    bad_xml = {IU_MEMBER: reports_tgz({1: ("<b>unclosed", "x", 1)})}
    with pytest.raises(LeadrrgError, match="not valid XML"):
        synthesize_iu(out, wheel=fake_wheel(tmp_path / "badxml.whl", bad_xml))
    nothing = {IU_MEMBER: reports_tgz({4: REPORTS[4]})}
    with pytest.raises(LeadrrgError, match="non-empty findings"):
        synthesize_iu(out, wheel=fake_wheel(tmp_path / "nofindings.whl", nothing))
    for kwargs in ({"size": 8}, {"workers": 0}, {"limit": 0}, {"section": "summary"}, {"label_from": "x"}):
        with pytest.raises(LeadrrgError):
            synthesize_iu(out, wheel=tmp_path / "empty.whl", **kwargs)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def test_download_failure_names_the_package_and_flag(tmp_path: Path, monkeypatch):
    def offline(package, version, dest, timeout_s=60, flag="--wheel"):
        raise LeadrrgError(
            f"could not download the wheel {package}=={version} with pip (pip could not reach the package "
            f"index); ... pass the file with {flag} PATH"
        )

    monkeypatch.setattr(iu_reports, "download_wheel", offline)
    with pytest.raises(LeadrrgError) as info:
        iu_archive(cache_dir=tmp_path / "cache", log=lambda m: None)
    assert "torchxrayvision" in str(info.value) and "--iu-wheel PATH" in str(info.value)
    assert list((tmp_path / "cache").rglob("*.tgz")) == []


def test_archive_is_cached_once(wheel: Path, tmp_path: Path, monkeypatch):
    downloads = []

    def download(package, version, dest, timeout_s=60, flag="--wheel"):
        downloads.append(f"{package}=={version}")
        Path(dest).mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, Path(dest) / wheel.name))

    monkeypatch.setattr(iu_reports, "download_wheel", download)
    monkeypatch.setenv("LEADRRG_CACHE", str(tmp_path / "cache"))
    first, info = iu_archive(log=lambda m: None)
    second, again = iu_archive(log=lambda m: None)
    assert downloads == ["torchxrayvision==1.5.7"] and first == second and info == again
    assert first == tmp_path / "cache/iu_xray/torchxrayvision-1.5.7/NLMCXR_reports.tgz"
    assert info["tgz_sha256"] == hashlib.sha256(reports_tgz()).hexdigest()
    assert sorted(p.name for p in first.parent.iterdir()) == ["NLMCXR_reports.json", "NLMCXR_reports.tgz"]


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli(wheel: Path, tmp_path: Path, capsys):
    out = tmp_path / "data"
    argv = ["synth", "--reports", "iu", "--out", str(out), "--iu-wheel", str(wheel), "--size", "48"]
    assert main([*argv, "--workers", "1", "--quiet", "--limit", "4"]) == 0
    assert "wrote 4 SynthCXR-IU studies" in capsys.readouterr().out
    assert len(_manifest(out)) == 4
    assert main([*argv, "--quiet"]) == 2  # not empty
    assert main([*argv, "--quiet", "--overwrite", "--preview", str(tmp_path / "p.png")]) == 2
    assert "--reports synthetic only" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "s"), "--iu-wheel", str(wheel), "--quiet"]) == 2
    assert "--reports iu only" in capsys.readouterr().err
    missing = [
        "synth",
        "--reports",
        "iu",
        "--out",
        str(tmp_path / "m"),
        "--iu-wheel",
        str(tmp_path / "no.whl"),
    ]
    assert main([*missing, "--quiet"]) == 2
    assert "torchxrayvision" in capsys.readouterr().err and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_real_wheel(tmp_path: Path):
    try:
        reports, provenance = load_iu_reports(cache_dir=tmp_path / "cache", log=lambda m: None)
    except LeadrrgError as exc:
        pytest.skip(f"the torchxrayvision==1.5.7 wheel is unreachable: {exc}")
    assert len(reports) == 3955 and reports[0].uid == "CXR1"
    assert sum(bool(r.findings) for r in reports) == 3425
    assert provenance["tgz_sha256"] == "8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a"
    out = synthesize_iu(tmp_path / "iu", size=48, workers=1, reports=reports, limit=50, provenance=provenance)
    records = _manifest(out)
    assert len(records) == 50 and all(r["findings"] for r in records)
