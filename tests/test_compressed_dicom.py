"""Compressed DICOM as hospitals send it: JPEG Lossless (process 14 SV1) and JPEG 2000 through the pinned pylibjpeg
decoders, on a generated CR and, when pydicom-data's RG1 files are on disk, on the real CR RG1 (MONOCHROME1,
1841 x 1955, 15 bits stored) in its released JPEG 2000 encodings and in a JPEG Lossless copy made here."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLosslessSV1, RLELossless

from leadrrg.data.images import check_image, load_image
from tests.jpeg_lossless import encode_jpeg_lossless, write_compressed_dicom
from tests.test_images import write_dicom


def chest_like(height: int = 48, width: int = 40, bits: int = 12, seed: int = 0) -> np.ndarray:
    """A (H, W) uint16 image below 2**bits with smooth structure and noise (what a CR detector stores)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    image = (
        0.3 + 0.5 * np.exp(-((xx - 0.5) ** 2) / 0.01) + 0.2 * yy + 0.05 * rng.standard_normal((height, width))
    )
    return (np.clip(image, 0, 1) * ((1 << bits) - 1)).astype(np.uint16)


def compressed_copies(tmp_path: Path, source: Path, bits_stored: int) -> dict[str, Path]:
    """`source` (uncompressed) as JPEG Lossless SV1 (the encoder in tests/jpeg_lossless.py), JPEG 2000 lossless and
    RLE (pydicom's encoders)."""
    dataset = pydicom.dcmread(source)
    pixels = dataset.pixel_array
    copies = {
        "jpeg_lossless": write_compressed_dicom(
            tmp_path / "jpll.dcm",
            copy.deepcopy(dataset),
            encode_jpeg_lossless(pixels, bits_stored),
            JPEGLosslessSV1,
        )
    }
    for name, syntax in (("j2k_lossless", JPEG2000Lossless), ("rle", RLELossless)):
        encoded = copy.deepcopy(dataset)
        encoded.compress(syntax, pixels)
        encoded.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        copies[name] = tmp_path / f"{name}.dcm"
    return copies


def test_pinned_decoders_are_installed() -> None:
    from pydicom.pixels import get_decoder

    for syntax in (JPEGLosslessSV1, JPEG2000Lossless, JPEG2000):
        assert "pylibjpeg" in get_decoder(syntax).available_plugins, syntax.name


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_compressed_copies_of_a_generated_cr_read_like_the_original(tmp_path: Path, photometric: str) -> None:
    source = write_dicom(tmp_path / "unc.dcm", chest_like(), photometric, WindowCenter=2048, WindowWidth=3000)
    expected = load_image(source)
    copies = compressed_copies(tmp_path, source, bits_stored=12)
    for name, path in copies.items():
        assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed, name
        assert check_image(path) is None and check_image(path, decode=True) is None, name
        np.testing.assert_array_equal(load_image(path), expected, err_msg=name)


def test_jpeg_lossless_at_16_bits(tmp_path: Path) -> None:
    stored = chest_like(bits=16, seed=3)
    source = write_dicom(tmp_path / "unc.dcm", stored, BitsStored=16, HighBit=15)
    path = compressed_copies(tmp_path, source, bits_stored=16)["jpeg_lossless"]
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, stored)
    np.testing.assert_array_equal(load_image(path), load_image(source))


def test_corrupt_jpeg_lossless_frame_is_one_sentence(tmp_path: Path) -> None:
    from leadrrg.errors import LeadrrgError

    source = write_dicom(tmp_path / "unc.dcm", chest_like())
    frame = encode_jpeg_lossless(pydicom.dcmread(source).pixel_array, 12)
    path = write_compressed_dicom(
        tmp_path / "cut.dcm", pydicom.dcmread(source), frame[: len(frame) // 3], JPEGLosslessSV1
    )
    with pytest.raises(LeadrrgError, match="JPEG Lossless") as info:
        load_image(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# The real CR: pydicom-data 1.0.0 (PyPI) ships RG1 as RG1_UNCR (uncompressed), RG1_J2KR (JPEG 2000 lossless)
# and RG1_J2KI (JPEG 2000 lossy) under data_store/data/ in its wheel.


def find_pydicom_data(name: str) -> Path | None:
    folders = []
    if os.environ.get("LEADRRG_RG1_DICOM"):
        folders.append(Path(os.environ["LEADRRG_RG1_DICOM"]).parent)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folders += [cache / "leadrrg", cache / "pydicom" / "data"]
    try:
        import data_store  # the pydicom-data package, when installed

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def rg1(name: str) -> Path:
    path = find_pydicom_data(f"{name}.dcm")
    if path is None:
        pytest.skip(
            f"{name}.dcm not found: `pip download --no-deps pydicom-data==1.0.0`, unzip data_store/data/RG1_*.dcm "
            "into ~/.cache/leadrrg/ (or set LEADRRG_RG1_DICOM to RG1_UNCR.dcm beside them)"
        )
    return path


@pytest.mark.slow
def test_real_cr_in_jpeg_2000_lossless_equals_the_uncompressed_file() -> None:
    expected = load_image(rg1("RG1_UNCR"))
    np.testing.assert_array_equal(load_image(rg1("RG1_J2KR")), expected)
    lossy = load_image(rg1("RG1_J2KI"))
    assert lossy.shape == expected.shape == (1955, 1841)
    assert float(np.abs(lossy - expected).mean()) < 0.01  # measured: 0.0025 (max 0.017)


@pytest.mark.slow
def test_real_cr_in_jpeg_lossless_equals_the_uncompressed_file(tmp_path: Path) -> None:
    source = rg1("RG1_UNCR")
    path = compressed_copies(tmp_path, source, bits_stored=15)["jpeg_lossless"]
    assert check_image(path) is None
    np.testing.assert_array_equal(load_image(path), load_image(source))
