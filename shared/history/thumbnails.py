"""Thumbnails of recorded images: small JPEGs, decoded cheaply."""
from __future__ import annotations

import io
import logging

from PIL import Image, ImageOps

from shared.images import decode_image

log = logging.getLogger(__name__)

THUMBNAIL_PX = 96


def make_thumbnail(data: bytes, size: int = THUMBNAIL_PX) -> bytes | None:
    """A JPEG no larger than size x size, or None if the bytes do not decode."""
    try:
        img = _decode_small(bytes(data), size)
        img.thumbnail((size, size))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=80)
        return out.getvalue()
    except Exception as exc:  # a thumbnail is a nicety; the record is kept without one
        log.warning("history: no thumbnail: %s", exc)
        return None


def _decode_small(data: bytes, size: int) -> Image.Image:
    """RGB image; JPEGs decode at 1/2..1/8 scale so a big photo costs the writer a fraction of a full decode."""
    img = Image.open(io.BytesIO(data))
    if img.format != "JPEG":
        return decode_image(data)  # every other format and mode, exactly as the models see it
    img.draft("RGB", (size * 2, size * 2))
    return ImageOps.exif_transpose(img).convert("RGB")
