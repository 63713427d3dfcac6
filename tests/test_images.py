"""Image loading: PNG/JPEG bit depths and modes, DICOM grayscale pipeline, and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, SecondaryCaptureImageStorage, generate_uid

from leadrrg.data.images import check_image, load_image
from leadrrg.errors import LeadrrgError

RAMP = np.tile(np.arange(64, dtype=np.float64) / 63.0, (32, 1))  # (32, 64) left dark -> right bright


def assert_unit_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32 and image.shape == shape
    assert image.min() >= 0.0 and image.max() <= 1.0


# --------------------------------------------------------------------------------------------------
# PNG / JPEG


def test_png_8_bit(tmp_path: Path) -> None:
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert_unit_image(image, (32, 64))
    np.testing.assert_allclose(image, np.floor(RAMP * 255) / 255, atol=1e-6)


def test_png_16_bit_keeps_full_precision(tmp_path: Path) -> None:
    Image.fromarray((RAMP * 65535).astype(np.uint16)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert_unit_image(image, (32, 64))
    np.testing.assert_allclose(image, np.floor(RAMP * 65535) / 65535, atol=1e-6)
    assert len(np.unique(image)) == 64


def test_jpeg_8_bit(tmp_path: Path) -> None:
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    image = load_image(tmp_path / "a.jpg")
    assert_unit_image(image, (32, 64))
    assert np.abs(image - RAMP).mean() < 0.02


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "1"])
def test_colour_palette_alpha_and_bilevel_become_gray(tmp_path: Path, mode: str) -> None:
    gray = Image.fromarray((RAMP * 255).astype(np.uint8))
    converted = gray.convert(mode)
    if mode in ("RGBA", "LA"):
        converted.putalpha(
            Image.fromarray(np.full((32, 64), 7, np.uint8))
        )  # near-transparent alpha is ignored
    converted.save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert_unit_image(image, (32, 64))
    assert image[:, :8].mean() < image[:, -8:].mean()  # the ramp survives
    if mode != "1":
        assert np.abs(image - np.asarray(gray, np.float32) / 255).max() < 0.02


def test_rgb_jpeg_uses_luma(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 1] = 200  # pure green -> luma 0.587 * 200
    Image.fromarray(rgb).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").mean() == pytest.approx(0.587 * 200 / 255, abs=0.01)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.png", b"", "empty"),
        ("text.png", b"this is not an image at all\n", "could not be decoded"),
        ("noise.jpg", bytes(range(256)) * 4, "could not be decoded"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LeadrrgError, match=message) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert check_image(path) is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LeadrrgError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_truncated_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(LeadrrgError, match=str(tmp_path / "a.png")):
        load_image(tmp_path / "a.png")
    assert check_image(tmp_path / "a.png") is not None  # the cheap check catches it too


def test_decompression_bomb_limit(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(LeadrrgError, match="over the limit"):
        load_image(tmp_path / "a.png", max_pixels=5000)
    assert load_image(tmp_path / "a.png", max_pixels=10_000).shape == (100, 100)


def test_check_image_accepts_good_files(tmp_path: Path) -> None:
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(tmp_path / "a.png")
    assert check_image(tmp_path / "a.png") is None
    assert check_image(tmp_path / "a.png", decode=True) is None


# --------------------------------------------------------------------------------------------------
# DICOM


def write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> Path:
    """A minimal uncompressed Secondary Capture DICOM from a uint16 array."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype(np.uint16).tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def halves(left: int, right: int) -> np.ndarray:
    stored = np.full((16, 32), left, np.uint16)
    stored[:, 16:] = right
    return stored


def test_dicom_monochrome2(tmp_path: Path) -> None:
    image = load_image(write_dicom(tmp_path / "a.dcm", halves(100, 3000)))
    assert_unit_image(image, (16, 32))
    assert image[:, :16].max() == 0.0 and image[:, 16:].min() == 1.0


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    image = load_image(write_dicom(tmp_path / "a.dcm", halves(100, 3000), photometric="MONOCHROME1"))
    assert image[:, :16].min() == 1.0 and image[:, 16:].max() == 0.0  # low stored value = white


def test_dicom_window_clips_outside_the_window(tmp_path: Path) -> None:
    stored = (RAMP * 4000).astype(np.uint16)  # 0..4000
    image = load_image(write_dicom(tmp_path / "a.dcm", stored, WindowCenter=2000, WindowWidth=400))
    inside = (stored > 1850) & (stored < 2150)
    assert image[stored < 1750].max() == 0.0 and image[stored > 2250].min() == 1.0
    assert 0.0 < image[inside].mean() < 1.0
    plain = load_image(write_dicom(tmp_path / "b.dcm", stored))
    assert (plain == 0.0).mean() < 0.05  # without the window nothing saturates


def test_dicom_window_applies_in_rescaled_units(tmp_path: Path) -> None:
    # Stored 0..2000 with intercept -1000 -> modality units -1000..1000; a window at 0 +/- 100 must hit
    # stored values near 1000, which only holds if the rescale runs before the window.
    stored = (RAMP * 2000).astype(np.uint16)
    path = write_dicom(
        tmp_path / "a.dcm", stored, RescaleSlope=1, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=200
    )
    image = load_image(path)
    assert image[stored < 880].max() == 0.0 and image[stored > 1120].min() == 1.0
    assert 0.0 < image[(stored > 950) & (stored < 1050)].mean() < 1.0


def test_dicom_without_suffix_is_detected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", halves(100, 3000))
    bare = path.rename(tmp_path / "1.2.840.12345")
    assert load_image(bare)[:, 16:].min() == 1.0


def test_not_a_dicom(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"hello, not dicom" * 20)
    with pytest.raises(LeadrrgError, match=r"not a DICOM file"):
        load_image(tmp_path / "a.dcm")


def test_dicom_without_pixels(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", halves(1, 2))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(LeadrrgError, match="no pixel data"):
        load_image(path)


def test_dicom_truncated_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", halves(1, 2))
    data = path.read_bytes()
    path.write_bytes(data[:-200])
    with pytest.raises(LeadrrgError, match=str(path)):
        load_image(path)
    assert check_image(path) is not None


def test_dicom_size_limit(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", halves(1, 2))
    with pytest.raises(LeadrrgError, match="over the limit"):
        load_image(path, max_pixels=100)


def write_jpeg_lossless_dicom(path: Path) -> Path:
    """A DICOM whose pixel data claims JPEG Lossless compression (a stub frame: decoders fail on it)."""
    write_dicom(path, halves(1, 2))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 32 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def test_compressed_dicom_without_decoder_names_the_transfer_syntax(tmp_path: Path) -> None:
    path = write_jpeg_lossless_dicom(tmp_path / "a.dcm")
    with pytest.raises(LeadrrgError, match="JPEG Lossless") as info:
        load_image(path)
    assert "1.2.840.10008.1.2.4.70" in str(info.value) and str(path) in str(info.value)


# --------------------------------------------------------------------------------------------------
# A real radiograph: RG1_UNCR.dcm (MONOCHROME1 CR chest, 1841 x 1955, window 15000/30000) from the
# PyPI package pydicom-data 1.0.0, where it lives at data_store/data/RG1_UNCR.dcm inside the wheel.


def find_rg1() -> Path | None:
    candidates = []
    if os.environ.get("LEADRRG_RG1_DICOM"):
        candidates.append(Path(os.environ["LEADRRG_RG1_DICOM"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    candidates += [cache / "leadrrg" / "RG1_UNCR.dcm", cache / "pydicom" / "data" / "RG1_UNCR.dcm"]
    try:
        import data_store  # the pydicom-data package, when installed

        candidates.append(Path(data_store.__file__).parent / "data" / "RG1_UNCR.dcm")
    except ImportError:
        pass
    return next((path for path in candidates if path.is_file()), None)


@pytest.mark.slow
def test_real_monochrome1_chest_has_bright_spine_and_dark_lungs() -> None:
    path = find_rg1()
    if path is None:
        pytest.skip(
            "RG1_UNCR.dcm not found: `pip download --no-deps pydicom-data==1.0.0`, unzip "
            "data_store/data/RG1_UNCR.dcm and set LEADRRG_RG1_DICOM to it (or put it in ~/.cache/leadrrg/)"
        )
    image = load_image(path)
    height, width = image.shape
    assert (height, width) == (1955, 1841)
    rows = slice(int(height * 0.3), int(height * 0.6))
    left_lung = image[rows, int(width * 0.2) : int(width * 0.35)].mean()
    right_lung = image[rows, int(width * 0.65) : int(width * 0.8)].mean()
    spine = image[rows, int(width * 0.45) : int(width * 0.55)].mean()
    # Measured: lungs 0.61 / 0.55, spine 0.89 (an uninverted image would give the opposite).
    assert max(left_lung, right_lung) + 0.15 < spine


def test_header_check_finds_a_truncated_jpeg_and_an_undecodable_compression(
    tmp_path: Path, monkeypatch
) -> None:
    from tests.bad_inputs import truncated_jpeg

    jpeg = truncated_jpeg(tmp_path / "cut.jpg")
    assert "truncated JPEG" in check_image(jpeg)
    path = write_jpeg_lossless_dicom(tmp_path / "a.dcm")
    monkeypatch.setattr("leadrrg.data.images._decoder_available", lambda uid: False)
    assert "no installed decoder" in check_image(path)
