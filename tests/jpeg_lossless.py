"""A minimal JPEG Lossless encoder (ITU-T T.81 Annex H: process 14, selection value 1, no point transform), for
tests: pydicom has no encoder for this transfer syntax, and hospitals send CR and DX images in it.

One grey component, one Huffman table in which the 17 difference categories all have 5-bit codes (valid, not
small: tests want a correct stream, not a compact one). Predictor: the first sample 2^(P-1), the rest of the first
row the sample to the left, the first sample of later rows the one above, every other sample the one to its left.

    frame = encode_jpeg_lossless(pixels, precision=12)    # (H, W) unsigned ints < 2**precision -> JPEG bytes
    write_compressed_dicom(path, dataset, frame)          # the DICOM with JPEGLosslessSV1 pixel data
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

CODE_BITS = 5  # every category's Huffman code length
CHUNK = 1 << 18  # samples turned into bits at a time (bounds the memory of a full-size radiograph)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _differences(pixels: np.ndarray, precision: int) -> np.ndarray:
    """(H, W) samples -> (H*W,) prediction differences, int64, each in [-2^15 + 1, 2^15]."""
    samples = pixels.astype(np.int64)
    predicted = np.empty_like(samples)
    predicted[:, 1:] = samples[:, :-1]  # Ra: the sample to the left
    predicted[1:, 0] = samples[:-1, 0]  # Rb: the first sample of a row is predicted from the one above
    predicted[0, 0] = 1 << (precision - 1)
    difference = (samples - predicted) % 65536  # modulo 2^16 (H.1.2.1)
    return np.where(difference > 32768, difference - 65536, difference).ravel()


def _bits(differences: np.ndarray) -> np.ndarray:
    """Prediction differences -> the entropy-coded bit string (uint8 0/1): per sample its category's code, then
    the category's extra bits (a negative difference is sent as difference - 1 in that many low bits)."""
    magnitude = np.abs(differences)
    category = np.zeros(magnitude.shape, np.int64)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int64) + 1
    category = np.minimum(category, 16)  # 32768: category 16, sent without extra bits
    extra_bits = np.where(category == 16, 0, category)
    extra = np.where(differences < 0, differences - 1, differences) & ((1 << extra_bits) - 1)
    values = (category << extra_bits) | extra  # the code of category c is c itself (canonical, 5 bits)
    lengths = CODE_BITS + extra_bits
    parts = []
    for start in range(0, values.size, CHUNK):
        v, n = values[start : start + CHUNK].astype(">u4"), lengths[start : start + CHUNK]
        bits = np.unpackbits(v.view(np.uint8).reshape(-1, 4), axis=1)  # (N, 32), most significant first
        keep = np.arange(32)[None, :] >= (32 - n)[:, None]
        parts.append(bits[keep])
    return np.concatenate(parts)


def encode_jpeg_lossless(pixels: np.ndarray, precision: int) -> bytes:
    """One JPEG Lossless (process 14, SV1) frame of unsigned (H, W) `pixels` below 2**precision."""
    height, width = pixels.shape
    if pixels.min() < 0 or pixels.max() >= 1 << precision or not 2 <= precision <= 16:
        raise ValueError(f"pixels must lie in [0, 2**{precision}) with 2 <= precision <= 16")
    bits = _bits(_differences(pixels, precision))
    bits = np.concatenate([bits, np.ones((-bits.size) % 8, np.uint8)])  # pad the last byte with 1-bits
    scan = np.packbits(bits).tobytes().replace(b"\xff", b"\xff\x00")  # byte stuffing
    counts = bytes(17 if length == CODE_BITS else 0 for length in range(1, 17))
    huffman = bytes([0x00]) + counts + bytes(range(17))  # DC table 0: 17 symbols of 5 bits
    frame = struct.pack(">BHHB", precision, height, width, 1) + bytes([1, 0x11, 0])
    scan_header = bytes([1, 1, 0x00, 1, 0, 0])  # 1 component (id 1, table 0), Ss=1 (predictor), Se=0, Ah/Al=0
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xFFC4, huffman),
            _segment(0xFFC3, frame),
            _segment(0xFFDA, scan_header),
            scan,
            b"\xff\xd9",
        ]
    )


def write_compressed_dicom(path: Path, dataset, frame: bytes, transfer_syntax) -> Path:
    """Save `dataset` (its pixel description kept) with `frame` as its encapsulated pixel data."""
    from pydicom.encaps import encapsulate

    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    dataset.PixelData = encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    dataset.save_as(path, enforce_file_format=True)
    return path
