"""One image decoder for training and serving: bytes -> RGB PIL image, with limits."""
from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import CorruptImage, EmptyImage, PayloadTooLarge, TooManyPixels, UnsupportedImage

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Pillow's own bomb check is process-global; we enforce a per-call limit instead.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe_image(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[str, int, int]:
    """Check size, format and pixel count from the header only; returns (format, width, height)."""
    if not data:
        raise EmptyImage("The request body is empty; send the image bytes.")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"The image is {len(data)} bytes; the limit is {limits.max_bytes} bytes.")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedImage(
            f"The bytes are not a supported image; send one of {', '.join(SUPPORTED_FORMATS)}."
        ) from None
    except Exception as exc:  # Pillow raises many kinds on hostile headers
        raise CorruptImage(f"The image header could not be read: {exc}") from None
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"Image format {img.format} is not supported; send one of {', '.join(SUPPORTED_FORMATS)}.")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise TooManyPixels(
            f"The image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} pixels."
        )
    return img.format, width, height


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), draft_side: int | None = None) -> Image.Image:
    """Bytes -> RGB image: EXIF orientation applied, first frame only, alpha flattened onto white.

    draft_side: a JPEG is decoded at the smallest libjpeg scale (1/2, 1/4, 1/8) whose longest side stays
    >= draft_side, for callers that shrink it anyway (OCR's cap); other formats decode at full size.
    """
    probe_image(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            img.seek(0)  # first frame of an animation
            if draft_side:
                _draft(img, draft_side)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CorruptImage(f"The image could not be decoded (truncated or corrupt): {exc}") from None


def _draft(img: Image.Image, longest_side: int) -> None:
    # Decoding 12 MP costs more than all the later shrinking; libjpeg can skip the detail in the DCT instead.
    scale = longest_side / max(img.size)
    if scale < 1:
        img.draft(img.mode, (max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale))))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit and 32-bit grey: rescale to 8 bits instead of clipping everything to white
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return canvas
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        span = (arr.max() - arr.min()) or 1.0
        img = Image.fromarray(((arr - arr.min()) * (255.0 / span)).astype(np.uint8), mode="L")
    return img.convert("RGB")


def read_image_file(path, limits: ImageLimits = ImageLimits()) -> tuple[Image.Image, bytes]:
    """Read and decode a file; returns the image and its raw bytes (for hashing)."""
    with open(path, "rb") as fh:
        data = fh.read(limits.max_bytes + 1)
    return decode_image(data, limits), data
