"""Decompression bombs and lying headers are refused before they are inflated (audit: reliability.md, Security 1-2).

Bounded: the bombs here inflate to 64 MiB at most and are built in 1 MiB pieces; memory is measured with
tracemalloc (zlib's output and numpy's arrays are both traced)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from leadrrg.data.image_limits import ImageTooLarge
from leadrrg.data.images import check_image, load_image
from leadrrg.errors import LeadrrgError
from leadrrg.inference.inputs import decode_bytes


def _meta(syntax) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    return meta


def _header(rows: int, columns: int, bits: int = 16, frames: int | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, generate_uid(), "CR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames:
        ds.NumberOfFrames = frames
    return ds


def _explicit_le() -> DicomBytesIO:
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    return out


def deflate_bomb(path: Path, payload: int, rows: int = 100, columns: int = 100) -> Path:
    """The audit's deflate_1g.dcm, smaller: a header claiming rows x columns, then `payload` bytes of zero pixel
    data, the whole dataset deflated (about 1000:1)."""
    out = _explicit_le()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, _meta(DeflatedExplicitVRLittleEndian))
    body = _explicit_le()
    write_dataset(body, _header(rows, columns))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflate.compress(body.getvalue() + b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", payload))]
    zeros = bytes(1 << 20)
    parts += [deflate.compress(zeros) for _ in range(payload >> 20)]
    parts.append(deflate.flush())
    path.write_bytes(out.getvalue() + b"".join(parts))
    return path


def _rle_frame(rows: int, columns: int) -> bytes:
    """One 8-bit RLE frame of zeros: a 64-byte header (1 segment at offset 64), each row as runs of <= 128."""
    row, left = b"", columns
    while left:
        run = min(128, left)
        row += bytes([257 - run, 0]) if run > 1 else b"\x00\x00"
        left -= run
    return struct.pack("<16I", 1, 64, *([0] * 14)) + row * rows


def rle_frames(path: Path, frames: int, rows: int, columns: int) -> Path:
    """The audit's rle_40frames.dcm, smaller: `frames` RLE frames of rows x columns."""
    ds = _header(rows, columns, bits=8, frames=frames)
    ds.file_meta = _meta(RLELossless)
    ds.PixelData = encapsulate([_rle_frame(rows, columns)] * frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def traced_peak(call) -> tuple[object, int]:
    """(what `call()` returned or raised, peak traced bytes while it ran)."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # returned, to be asserted on
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------------------------------
# Deflated DICOM


def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    path = deflate_bomb(tmp_path / "deflate_64m.dcm", 64 << 20)
    assert path.stat().st_size < 200_000  # 64 MiB of pixel data in ~65 KB
    for read in (lambda: load_image(path), lambda: decode_bytes(path.read_bytes(), "images #1", 25_000_000)):
        error, peak = traced_peak(read)
        assert isinstance(error, ImageTooLarge) and "deflated DICOM" in str(error), error
        assert peak < 8 << 20, peak  # before: the 64 MiB stream inflated in full, twice in the service
    assert "decompression bomb" in check_image(path)  # the cheap check (`leadrrg check`) too


def test_a_deflated_dicom_within_its_budget_reads_like_the_plain_one(tmp_path: Path) -> None:
    stored = (np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 7) % 4096
    ds = _header(48, 40)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = stored.tobytes()
    ds.file_meta = _meta(ExplicitVRLittleEndian)
    ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    ds.file_meta = _meta(DeflatedExplicitVRLittleEndian)
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert (
        pydicom.dcmread(tmp_path / "deflated.dcm").file_meta.TransferSyntaxUID
        == DeflatedExplicitVRLittleEndian
    )
    plain = load_image(tmp_path / "plain.dcm")
    assert np.array_equal(load_image(tmp_path / "deflated.dcm"), plain)
    data = (tmp_path / "deflated.dcm").read_bytes()
    assert np.array_equal(decode_bytes(data, "images #1", 25_000_000), plain)


def test_a_deflated_dicom_whose_header_claims_too_many_pixels_is_too_large(tmp_path: Path) -> None:
    path = deflate_bomb(tmp_path / "big.dcm", 1 << 20, rows=6000, columns=6000)
    with pytest.raises(ImageTooLarge, match="over the limit"):
        load_image(path, max_pixels=25_000_000)


# --------------------------------------------------------------------------------------------------
# Multi-frame DICOM and malformed headers


def test_only_frame_0_of_a_multi_frame_rle_dicom_is_decoded(tmp_path: Path) -> None:
    path = rle_frames(tmp_path / "rle_80frames.dcm", frames=80, rows=500, columns=500)
    image, peak = traced_peak(lambda: load_image(path, max_pixels=250_000))
    assert isinstance(image, np.ndarray) and image.shape == (500, 500), image
    # one frame is 0.25 MB of uint8 (a few float64 copies of it: ~10 MB); all 80 frames were 20 MB of uint8 alone
    assert peak < 14 << 20, peak
    image, _ = traced_peak(lambda: decode_bytes(path.read_bytes(), "images #1", 250_000))
    assert isinstance(image, np.ndarray) and image.shape == (500, 500), image


def test_the_pixel_limit_applies_to_one_frame(tmp_path: Path) -> None:
    path = rle_frames(tmp_path / "rle.dcm", frames=3, rows=100, columns=100)
    assert load_image(path, max_pixels=10_000).shape == (100, 100)
    with pytest.raises(ImageTooLarge, match="10000 pixels, over the limit of 9999"):
        load_image(path, max_pixels=9_999)


def test_number_of_frames_ab_names_the_file_and_the_field(tmp_path: Path) -> None:
    from tests.test_images import halves, write_dicom

    path = write_dicom(tmp_path / "frames_abc.dcm", halves(1, 2))
    raw = path.read_bytes()
    element = b"\x28\x00\x08\x00IS\x02\x00ab"  # (0028,0008) NumberOfFrames IS 'ab', spliced before Rows
    rows_at = raw.index(b"\x28\x00\x10\x00US")
    path.write_bytes(raw[:rows_at] + element + raw[rows_at:])
    expected = "frames_abc.dcm has NumberOfFrames 'ab'; expected a whole number"
    with pytest.raises(LeadrrgError, match=expected):
        load_image(path)
    assert expected in check_image(path)  # the cheap check, without raising
    with pytest.raises(LeadrrgError, match=r"images #1 \(\"f.dcm\"\) has NumberOfFrames 'ab'") as caught:
        decode_bytes(path.read_bytes(), 'images #1 ("f.dcm")', 25_000_000)
    assert type(caught.value) is LeadrrgError


# --------------------------------------------------------------------------------------------------
# Pillow's own bomb refusal


def _png_claiming(width: int, height: int) -> bytes:
    """A 69-byte PNG whose header claims width x height (no pixel data to speak of)."""
    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_a_png_claiming_100000_by_100000_is_too_large_not_unreadable(tmp_path: Path) -> None:
    data = _png_claiming(100_000, 100_000)
    path = tmp_path / "claim.png"
    path.write_bytes(data)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))  # Pillow refuses it itself, before leadrrg's pixel check could
    for read in (lambda: load_image(path), lambda: decode_bytes(data, "images #1", 25_000_000)):
        with pytest.raises(ImageTooLarge):
            read()
