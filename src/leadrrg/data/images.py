"""Load radiographs as float32 (H, W) arrays in [0, 1]: PNG and JPEG through Pillow, DICOM through pydicom.

Intensity conventions:
- PNG/JPEG: pixel values are divided by the largest value of their bit depth (255 for 8-bit, 65535 for
  16-bit), so a stored image keeps its brightness; colour images are converted to luma (ITU-R 601),
  palette images through their palette, and an alpha channel is dropped.
- DICOM: the grayscale pipeline of the standard, in order: Modality LUT (rescale slope/intercept or a
  LUT), VOI LUT (a LUT or window centre/width, the first one stored), min-max to [0, 1], and finally
  MONOCHROME1 inversion, so bones are bright and air is dark whatever the photometric interpretation.

Compressed DICOM: JPEG Lossless (process 14, e.g. SV1), JPEG baseline / extended, JPEG-LS and JPEG 2000
through pylibjpeg (pylibjpeg-libjpeg, pylibjpeg-openjpeg; pinned dependencies), RLE through pydicom itself.

Every failure (missing, empty, truncated, corrupt, non-image, too large, compressed DICOM without a
decoder or with a truncated frame) raises `LeadrrgError` naming the file and what was expected; an image over
the pixel limit, or a deflated DICOM that inflates past its budget, raises its subclass `ImageTooLarge`
(`leadrrg.data.image_limits`: the budgets are checked before anything is decoded; only frame 0 is decoded).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from leadrrg.data.image_limits import ImageTooLarge, check_deflated, check_size, frame_count, header_int
from leadrrg.errors import LeadrrgError

# Largest image accepted (pixels). Chest radiographs are at most ~4300 x 4300 (18.5M); the limit guards
# against decompression bombs and against DICOM headers that claim absurd sizes.
MAX_PIXELS = 64_000_000
# Smallest side accepted (pixels): anything smaller is an icon or a placeholder, not a radiograph, and would
# otherwise be upscaled into a confident report.
MIN_SIDE = 8
EXIF_ORIENTATION = 0x0112

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
EXPECTED = "a PNG, JPEG or DICOM radiograph"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one radiograph as float32 (H, W) in [0, 1]. Raises `LeadrrgError` naming the file."""
    path = Path(path)
    _check_file(path)
    if _is_dicom(path):
        return _load_dicom(path, max_pixels)
    return _load_pil(path, max_pixels)


def check_image(path: str | Path, decode: bool = False, max_pixels: int = MAX_PIXELS) -> str | None:
    """Validate an image without raising: None when readable, else the reason (one sentence).

    `decode=False` is the cheap check (file present and non-empty, header parsed, size within limits,
    PNG chunk checksums, the JPEG end marker, DICOM pixel-data length or a decoder for its compression);
    `decode=True` decodes the pixels fully.
    """
    try:
        if decode:
            load_image(path, max_pixels)
        else:
            _check_header(Path(path), max_pixels)
    except LeadrrgError as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _check_file(path: Path) -> None:
    if not path.exists():
        raise LeadrrgError(f"image {path} does not exist; expected {EXPECTED}")
    if not path.is_file():
        raise LeadrrgError(f"image {path} is not a file; expected {EXPECTED}")
    if path.stat().st_size == 0:
        raise LeadrrgError(f"image {path} is empty (0 bytes); expected {EXPECTED}")


def _is_dicom(path: Path) -> bool:
    """DICOM by suffix, or by the 'DICM' magic at byte 128 (MIMIC-CXR and PACS exports often lack a suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix.lower() in PIL_SUFFIXES:
        return False
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    check_size(f"image {path}", height, width, max_pixels)
    if min(height, width) < MIN_SIDE:
        raise LeadrrgError(
            f"image {path} is {width}x{height} pixels; expected a radiograph of at least {MIN_SIDE} pixels a side"
        )


def _too_large(path: Path, exc: BaseException) -> ImageTooLarge:
    """Pillow's own bomb refusal (a claimed size over twice its limit) as ImageTooLarge (413, not 400)."""
    return ImageTooLarge(
        f"image {path} is too large to decode ({_describe(exc)}); expected a radiograph of at most a few "
        "ten million pixels"
    )


def _normalise_min_max(pixels: np.ndarray) -> np.ndarray:
    """float (H, W) -> float32 in [0, 1]; non-finite pixels become the minimum; a constant image is zeros."""
    pixels = pixels.astype(np.float64, copy=False)
    finite = np.isfinite(pixels)
    if not finite.any():
        return np.zeros(pixels.shape, np.float32)
    low, high = float(pixels[finite].min()), float(pixels[finite].max())
    if high <= low:
        return np.zeros(pixels.shape, np.float32)
    pixels = np.where(finite, pixels, low)
    return ((pixels - low) / (high - low)).astype(np.float32)


def _check_header(path: Path, max_pixels: int) -> None:
    _check_file(path)
    if _is_dicom(path):
        dataset = _read_dicom(path, max_pixels)
        _dicom_geometry(path, dataset, max_pixels)
        return
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, image.height, image.width, max_pixels)
                image.verify()
                is_jpeg = image.format == "JPEG"
        if is_jpeg:
            _check_jpeg_end(path)
    except LeadrrgError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, exc) from None
    except Exception as exc:  # Pillow raises many types for bad files
        raise LeadrrgError(
            f"image {path} is not a readable image ({_describe(exc)}); expected {EXPECTED}"
        ) from None


def _check_jpeg_end(path: Path, window: int = 4096) -> None:
    """A complete JPEG ends with the end-of-image marker FF D9 (Pillow's verify() does not look; a truncated file
    passes it). Searched in the last `window` bytes, so a short trailer after the marker is still accepted."""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - window))
        tail = handle.read()
    if b"\xff\xd9" not in tail:
        raise LeadrrgError(f"image {path} is a truncated JPEG (no end-of-image marker); expected {EXPECTED}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


# --------------------------------------------------------------------------------------------------
# PNG / JPEG (Pillow)


def _load_pil(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; treat that as an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, image.height, image.width, max_pixels)
                image.load()
                return _pil_to_gray(_finite(path, _upright(image)))
    except LeadrrgError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(path, exc) from None
    except Exception as exc:
        raise LeadrrgError(
            f"image {path} could not be decoded ({_describe(exc)}); expected {EXPECTED}"
        ) from None


def _upright(image):
    """The image as displayed: its EXIF Orientation (a camera or phone photo of a film) applied."""
    from PIL import ImageOps

    if image.getexif().get(EXIF_ORIENTATION, 1) in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def _finite(path: Path, image):
    """Refuse a float image with NaN or infinite pixels (min-max scaling would hide them in a black image)."""
    if image.mode == "F" and not np.isfinite(np.asarray(image, dtype=np.float32)).all():
        raise LeadrrgError(f"image {path} holds NaN or infinite pixel values; expected finite pixels")
    return image


def _pil_to_gray(image) -> np.ndarray:
    """A decoded Pillow image -> float32 (H, W) in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode == "I":  # 32-bit integer; Pillow uses it for some 16-bit PNG/TIFF files
        pixels = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if pixels.min() >= 0 and pixels.max() <= 65535 else None
        return (pixels / scale).astype(np.float32) if scale else _normalise_min_max(pixels)
    if mode == "F":
        return _normalise_min_max(np.asarray(image, dtype=np.float64))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Drop alpha: a radiograph's alpha is at best a mask; the pixel values are the signal.
        image = image.convert("RGB") if mode in ("RGBA", "RGBa", "PA") else image.getchannel("L")
    if image.mode != "L":
        image = image.convert("L")  # RGB, CMYK, YCbCr, 1-bit: ITU-R 601 luma
    return np.asarray(image, dtype=np.float32) / 255.0


# --------------------------------------------------------------------------------------------------
# DICOM (pydicom 3)


def _read_dicom(path: Path, max_pixels: int):
    """The dataset, once a deflated one is known to inflate within its budget (`check_deflated`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with open(path, "rb") as handle:
        check_deflated(f"DICOM file {path}", handle, max_pixels)
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise LeadrrgError(
            f"image {path} is not a DICOM file (no DICM header); expected {EXPECTED}"
        ) from None
    except Exception as exc:
        raise LeadrrgError(
            f"DICOM file {path} could not be parsed ({_describe(exc)}); expected {EXPECTED}"
        ) from None


def _transfer_syntax(dataset) -> str:
    uid = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return "unknown transfer syntax"
    return f"{uid.name} ({uid})"


def _dicom_geometry(path: Path, dataset, max_pixels: int) -> None:
    """Check that a DICOM dataset holds a single-plane image of sane size (header only)."""
    if "PixelData" not in dataset:
        raise LeadrrgError(
            f"DICOM file {path} has no pixel data (e.g. a structured report); expected an image"
        )
    name = f"DICOM file {path}"
    rows, columns = header_int(name, dataset, "Rows", 0), header_int(name, dataset, "Columns", 0)
    _check_size(path, rows, columns, max_pixels)  # one frame: only frame 0 is decoded
    frames = frame_count(name, dataset)
    uid = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if uid is not None and uid.is_compressed and not _decoder_available(uid):
        raise LeadrrgError(
            f"DICOM file {path} uses the compressed transfer syntax {_transfer_syntax(dataset)}, which no installed "
            "decoder reads; install leadrrg's pinned decoders (pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg) or python-gdcm, or convert the file to an uncompressed DICOM or PNG"
        )
    if uid is not None and uid.is_compressed:
        _check_frames_complete(path, dataset, uid, frames)
    if uid is not None and not uid.is_compressed:
        bits = header_int(name, dataset, "BitsAllocated", 16, minimum=1)
        samples = header_int(name, dataset, "SamplesPerPixel", 1, minimum=1)
        expected = rows * columns * samples * frames * bits // 8
        if len(dataset.PixelData) < expected:
            raise LeadrrgError(
                f"DICOM file {path} is truncated: {len(dataset.PixelData)} bytes of pixel data for "
                f"{columns}x{rows}x{frames} frames at {bits} bits (expected {expected})"
            )


def _check_frames_complete(path: Path, dataset, uid, frames: int) -> None:
    """Every JPEG, JPEG-LS and JPEG 2000 frame ends with its end marker FF D9 (EOI / EOC; a frame may be padded
    with a zero byte to even length). Decoders fill the rest of a truncated frame without a word, so look."""
    from pydicom.encaps import generate_frames

    if uid == RLE_LOSSLESS or uid.name.startswith("Deflated"):
        return  # RLE segments and deflate streams have no end marker
    try:
        for index, frame in enumerate(generate_frames(dataset.PixelData, number_of_frames=frames)):
            if b"\xff\xd9" not in frame.rstrip(b"\x00")[-2:]:
                raise LeadrrgError(
                    f"DICOM file {path} has a truncated {uid.name} frame {index + 1} (no end marker FF D9); "
                    "expected complete compressed pixel data"
                )
    except LeadrrgError:
        raise
    except Exception as exc:
        raise LeadrrgError(
            f"DICOM file {path} has unreadable encapsulated pixel data ({_describe(exc)}); expected {EXPECTED}"
        ) from None


def _decoder_available(uid) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return bool(get_decoder(uid).is_available)
    except Exception:  # no decoder registered for this syntax at all
        return False


def _load_dicom(path: Path, max_pixels: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    dataset = _read_dicom(path, max_pixels)
    _dicom_geometry(path, dataset, max_pixels)
    samples = header_int(f"DICOM file {path}", dataset, "SamplesPerPixel", 1, minimum=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # e.g. more pixel data than NumberOfFrames: frame 0 is all we read
            pixels = pixel_array(dataset, index=0)  # frame 0 only: a radiograph has one
    except Exception as exc:
        uid = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        if uid is not None and uid.is_compressed:
            raise LeadrrgError(
                f"DICOM file {path} holds {_transfer_syntax(dataset)} pixel data that no installed decoder could "
                f"decode (decoder said: {_describe(exc)}); expected a valid compressed frame, or convert the file "
                "to an uncompressed DICOM or PNG"
            ) from None
        raise LeadrrgError(
            f"DICOM file {path} has unreadable pixel data ({_describe(exc)}); expected {EXPECTED}"
        ) from None

    if samples > 1:
        # pydicom returns RGB (YBR converted); use luma like the PNG path.
        rgb = pixels.astype(np.float64)
        pixels = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return _normalise_min_max(pixels)
    if pixels.ndim != 2:
        raise LeadrrgError(f"DICOM file {path} has pixel array of shape {pixels.shape}; expected a 2-D image")

    try:
        values = apply_modality_lut(pixels, dataset)  # stored values -> modality units (e.g. rescale)
        values = apply_voi_lut(values, dataset, index=0, prefer_lut=True)  # VOI LUT or window, if any
    except Exception as exc:
        raise LeadrrgError(
            f"DICOM file {path} has an invalid Modality/VOI LUT or window ({_describe(exc)})"
        ) from None
    image = _normalise_min_max(np.asarray(values, dtype=np.float64))
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        image = 1.0 - image  # MONOCHROME1: the lowest value is white
    return image.astype(np.float32, copy=False)
