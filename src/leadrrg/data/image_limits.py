"""The budgets an image is checked against before it is decoded (decompression bombs and lying headers).

- Pixels: one frame's Rows x Columns (or a PNG / JPEG's width x height) against `max_pixels`; only frame 0 of a
  multi-frame DICOM is ever decoded.
- DICOM header fields are read as whole numbers here, so a malformed one (`NumberOfFrames='ab'`) is a
  `LeadrrgError` naming the file and the field, not an internal error.
- Deflated DICOM (transfer syntax 1.2.840.10008.1.2.1.99): pydicom inflates the whole dataset in memory while
  reading it, and 1 MB of deflate can inflate to 1 GB. `check_deflated` inflates the stream first, keeping only
  its first MiB (the header), and refuses it once it inflates past what the header's Rows x Columns x
  SamplesPerPixel x BitsAllocated x NumberOfFrames needs, or past `max_pixels * MAX_BYTES_PER_PIXEL`, whichever
  is smaller, before pydicom reads it.
"""

from __future__ import annotations

import io
import warnings
import zlib
from typing import BinaryIO

from leadrrg.errors import LeadrrgError

DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_BYTES_PER_PIXEL = 6  # 3 samples of 16 bits: the most a radiograph's pixel needs
HEADER_ROOM = 1 << 20  # inflated bytes kept to parse the header (everything before the pixel data)
TRAILER_ROOM = 1 << 16  # elements allowed after the pixel data (padding, digital signatures)
CHUNK = 1 << 20
PIXEL_DATA = 0x7FE00010


class ImageTooLarge(LeadrrgError):
    """An image over the pixel or byte limit (a decompression bomb or a wrong header); 413 in the service."""


def check_size(name: str, height: int, width: int, max_pixels: int) -> None:
    """One frame of `width` x `height` against the pixel limit (`name` as it appears in messages)."""
    if height <= 0 or width <= 0:
        raise LeadrrgError(f"{name} has size {width}x{height}; expected a non-empty radiograph")
    if height * width > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {height * width} pixels, over the limit of {max_pixels} "
            "(a decompression bomb or a wrong header); expected a radiograph of at most that size"
        )


def header_int(name: str, dataset, keyword: str, default: int, minimum: int = 0) -> int:
    """A DICOM header field as a whole number (`default` when absent or empty), or a LeadrrgError naming it."""
    try:
        value = dataset.get(keyword, None)
        number = default if value is None or str(value).strip() == "" else int(value)
    except Exception:
        shown = _shown(dataset, keyword)
        raise LeadrrgError(f"{name} has {keyword} {shown}; expected a whole number") from None
    if number < minimum:
        raise LeadrrgError(f"{name} has {keyword} {number}; expected a whole number of at least {minimum}")
    return number


def _shown(dataset, keyword: str) -> str:
    try:
        return repr(str(dataset[keyword].value)[:40])
    except Exception:
        return "(unreadable)"


def frame_count(name: str, dataset) -> int:
    """NumberOfFrames, 1 when absent or 0."""
    return header_int(name, dataset, "NumberOfFrames", 1) or 1


def pixel_data_bytes(name: str, dataset, max_pixels: int) -> int:
    """Bytes of native pixel data the header describes (every frame); checks one frame against the limit."""
    rows, columns = header_int(name, dataset, "Rows", 0), header_int(name, dataset, "Columns", 0)
    check_size(name, rows, columns, max_pixels)
    samples = header_int(name, dataset, "SamplesPerPixel", 1, minimum=1)
    bits = header_int(name, dataset, "BitsAllocated", 16, minimum=1)
    return (rows * columns * samples * frame_count(name, dataset) * bits + 7) // 8


def check_deflated(name: str, stream: BinaryIO, max_pixels: int) -> None:
    """Refuse a deflated DICOM (ImageTooLarge) that inflates past its header's needs or the byte budget.

    `stream` is the file from its start; any other transfer syntax, or a file pydicom would refuse anyway, passes
    untouched (pydicom names the problem)."""
    from pydicom.filereader import read_dataset

    start = stream.tell()
    try:
        syntax = ""
        if stream.read(132)[128:132] == b"DICM":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
            syntax = str(meta.get("TransferSyntaxUID", "") or "").strip("\0 ")
    except Exception:
        syntax = ""
    if syntax != DEFLATED:
        stream.seek(start)
        return
    budget = max_pixels * MAX_BYTES_PER_PIXEL + HEADER_ROOM
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    head, count = _inflate(stream, inflater, HEADER_ROOM, keep=True)
    limit = min(budget, _needed_bytes(name, head, max_pixels) or budget)
    if count <= limit:
        count += _inflate(stream, inflater, limit - count, keep=False)[1]
    stream.seek(start)
    if count > limit:
        raise ImageTooLarge(
            f"{name} is a deflated DICOM that inflates to more than {limit} bytes, more than its header's image "
            f"needs or the limit of {max_pixels} pixels allows (a decompression bomb); expected a radiograph of "
            "at most that size"
        )


def _inflate(stream: BinaryIO, inflater, budget: int, keep: bool) -> tuple[bytes, int]:
    """Inflate from `stream` until its end or past `budget` bytes -> (the bytes if `keep`, how many)."""
    kept, count = [], 0
    while count <= budget and not inflater.eof:
        pending = inflater.unconsumed_tail or stream.read(CHUNK)
        try:
            piece = inflater.decompress(pending, min(CHUNK, budget + 1 - count))
        except zlib.error:
            break  # corrupt deflate: pydicom's reading names it
        if not piece and not pending:
            break
        count += len(piece)
        if keep:
            kept.append(piece)
    return b"".join(kept), count


def _needed_bytes(name: str, head: bytes, max_pixels: int) -> int | None:
    """The inflated size the header in `head` accounts for (None when the header does not fit in `head`)."""
    from pydicom.filereader import read_dataset

    buffer = io.BytesIO(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = read_dataset(buffer, False, True, stop_when=lambda tag, vr, length: tag == PIXEL_DATA)
    except Exception:
        return None
    offset = buffer.tell()
    if head[offset : offset + 4] != b"\xe0\x7f\x10\x00" or "Rows" not in dataset:
        return None  # the pixel data's element is not in the first MiB: the byte budget alone applies
    return offset + 12 + pixel_data_bytes(name, dataset, max_pixels) + 1 + TRAILER_ROOM
