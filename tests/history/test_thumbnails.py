"""Thumbnails: small JPEGs from every image mode."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from shared import history


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("P", "GIF"), ("L", "JPEG"), ("I;16", "PNG")])
def test_thumbnails_of_other_modes_are_small_jpegs(mode, fmt):
    buf = io.BytesIO()
    Image.new(mode, (400, 100)).save(buf, format=fmt)
    thumb = Image.open(io.BytesIO(history.make_thumbnail(buf.getvalue())))
    assert thumb.format == "JPEG" and thumb.size == (96, 24)
