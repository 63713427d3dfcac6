"""What inference accepts as an image, turned into the model's input.

One view may be a path (PNG / JPEG / DICOM, read by `leadrrg.data.images.load_image`), a PIL image, a numpy
array or torch tensor ((H, W) or (H, W, 1 | 3 | 4); uint8 / uint16 scaled by their range, floats taken as [0, 1]),
or raw file bytes (the service's uploads; the format is sniffed from the content, never from a file name).
Every view is then letterboxed and normalised exactly as `StudyDataset.load_view` does at evaluation time.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from PIL import Image

from leadrrg.config import VisionConfig
from leadrrg.data.dataset import letterbox
from leadrrg.data.image_limits import ImageTooLarge, check_deflated, header_int
from leadrrg.data.images import MAX_PIXELS, _pil_to_gray, load_image
from leadrrg.errors import LeadrrgError

EXPECTED = "a PNG, JPEG or DICOM radiograph"


class UnsupportedImage(LeadrrgError):
    """Content that is not PNG, JPEG or DICOM."""


def sniff_format(data: bytes) -> str | None:
    """'png' | 'jpeg' | 'dicom' from the first bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def image_size(
    data: bytes, kind: str, name: str = "the image", max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """(width, height) of one frame from the header only, without decoding the pixels. Raises ImageTooLarge
    for a deflated DICOM that inflates past its budget, or an image Pillow refuses as a decompression bomb."""
    if kind == "dicom":
        check_deflated(name, io.BytesIO(data), max_pixels)  # before pydicom inflates it whole
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        except Exception:
            return 0, 0  # let the full read name the problem
        return header_int(name, dataset, "Columns", 0), header_int(name, dataset, "Rows", 0)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{name} is too large to decode ({exc}); expected a radiograph") from None
    except Exception:
        return 0, 0


def decode_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded file bytes -> float32 (H, W) in [0, 1]. Raises UnsupportedImage (not PNG / JPEG / DICOM),
    ImageTooLarge (over `max_pixels`) or LeadrrgError (unreadable), each naming `name`."""
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedImage(f"{name} is not {EXPECTED} (its content is neither PNG, JPEG nor DICOM)")
    width, height = image_size(data, kind, name, max_pixels)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name} is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}; "
            "expected a radiograph of at most that size"
        )
    suffix = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}[kind]
    # The file readers (DICOM LUTs, 16-bit PNG, truncation checks) work on paths: a private temporary file.
    handle, temp = tempfile.mkstemp(suffix=suffix, prefix="leadrrg-upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        try:
            return load_image(temp, max_pixels)
        except LeadrrgError as exc:  # the same class (ImageTooLarge stays 413), naming the upload
            message = str(exc).replace(f"image {temp}", name).replace(temp, name)
            raise type(exc)(message) from None
    finally:
        os.unlink(temp)


def to_gray(image: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One view (path, PIL image, array, tensor or bytes) -> float32 (H, W) in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(Path(image).expanduser(), max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_bytes(bytes(image), "the image bytes", max_pixels)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_gray(image, max_pixels)
    if isinstance(image, Image.Image):  # the PNG reader's own conversion (16-bit, palette, alpha)
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(
                f"PIL image of {image.width}x{image.height} pixels is over the limit of {max_pixels}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
        return _pil_to_gray(image)
    raise LeadrrgError(
        f"an image of type {type(image).__name__} cannot be read; expected a path to {EXPECTED}, a PIL image, "
        "a numpy array or a torch tensor"
    )


def _array_to_gray(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            rgb = array[..., :3].astype(np.float64)
            luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            array = luma.astype(array.dtype) if np.issubdtype(array.dtype, np.integer) else luma
    if array.ndim != 2 or min(array.shape) < 1:
        raise LeadrrgError(
            f"an image array of shape {array.shape} cannot be read; expected (H, W) or (H, W, 1|3|4)"
        )
    if array.size > max_pixels:
        raise ImageTooLarge(
            f"image array of {array.shape[1]}x{array.shape[0]} is over the limit of {max_pixels}"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise LeadrrgError("the image array holds NaN or infinite values; expected finite pixels")
    if values.min() < 0 or values.max() > 1:
        raise LeadrrgError(
            f"a float image array has values in [{values.min():.3g}, {values.max():.3g}]; expected [0, 1] "
            "(or pass uint8 / uint16 pixels)"
        )
    return values


def view_tensor(gray: np.ndarray, vision: VisionConfig) -> torch.Tensor:
    """float32 (H, W) in [0, 1] -> (C, S, S): letterbox and normalise as `StudyDataset.load_view` (train=False)."""
    size = vision.image_size
    image = letterbox(torch.from_numpy(np.ascontiguousarray(gray)), size)  # (S, S)
    image = (image - vision.mean) / vision.std
    return image[None].expand(vision.channels, size, size).contiguous()  # (C, S, S)


def study_tensors(
    views: list[np.ndarray], vision: VisionConfig, max_views: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A study's gray views -> images (V, C, S, S) zero-padded to `max_views`, view_mask (V,)."""
    if not views:
        raise LeadrrgError("a study needs at least one image")
    if len(views) > max_views:
        raise LeadrrgError(
            f"{len(views)} images given but this model reads at most {max_views} view(s) per study "
            "(model.max_views); give one study's views, frontal first"
        )
    size = vision.image_size
    images = torch.zeros(max_views, vision.channels, size, size)
    view_mask = torch.zeros(max_views, dtype=torch.bool)
    for index, gray in enumerate(views):
        images[index] = view_tensor(gray, vision)
        view_mask[index] = True
    return images, view_mask
