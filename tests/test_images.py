"""The one decoder: every odd kind of image becomes RGB, every bad one a typed error."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from shared.errors import CorruptImage, EmptyImage, PayloadTooLarge, TooManyPixels, UnsupportedImage
from shared.images import ImageLimits, decode_image, probe_image, read_image_file


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_rgb_png_round_trip(make_image_bytes):
    img = decode_image(make_image_bytes("PNG", (16, 12), color=(200, 30, 30)))
    assert img.mode == "RGB" and img.size == (16, 12)
    assert img.getpixel((0, 0)) == (200, 30, 30)


def test_exif_orientation_is_applied(make_image_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = make_image_bytes("JPEG", (40, 20), exif=exif.tobytes())
    assert decode_image(data).size == (20, 40)


def test_palette_image_becomes_rgb():
    img = Image.new("P", (8, 8))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.paste(1, (0, 0, 8, 8))
    out = decode_image(_save(img, "PNG"))
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (10, 200, 30)


def test_transparent_palette_flattens_on_white():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0] * 256)
    out = decode_image(_save(img, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_alpha_is_flattened_onto_white(make_image_bytes):
    out = decode_image(make_image_bytes("PNG", (4, 4), mode="RGBA", color=(0, 0, 0, 0)))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(make_image_bytes):
    out = decode_image(make_image_bytes("JPEG", (8, 8), mode="CMYK", color=(0, 255, 255, 0), quality=95))
    red, green, blue = out.getpixel((4, 4))
    assert out.mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_16_bit_grey_is_rescaled_not_clipped():
    arr = np.zeros((4, 4), dtype=np.uint16)
    arr[0, 0], arr[1, 1] = 1000, 500
    out = decode_image(_save(Image.fromarray(arr), "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert 120 < out.getpixel((1, 1))[0] < 135 and out.getpixel((2, 2)) == (0, 0, 0)


def test_grayscale_becomes_rgb(make_image_bytes):
    out = decode_image(make_image_bytes("PNG", (4, 4), mode="L", color=77))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (77, 77, 77)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (6, 6), (255, 0, 0)), Image.new("RGB", (6, 6), (0, 0, 255))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    red, _, blue = decode_image(data).getpixel((2, 2))
    assert red > 200 and blue < 50


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height: a pixel bomb that is tiny on the wire."""
    data = bytearray(_save(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_pixel_bomb_is_refused_from_the_header():
    bomb = _png_header_claiming(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(TooManyPixels) as info:
        decode_image(bomb, ImageLimits(max_pixels=40_000_000))
    assert info.value.status == 413 and "100000x100000" in info.value.message


def test_pixel_limit_is_per_call(make_image_bytes):
    data = make_image_bytes("PNG", (20, 20))
    with pytest.raises(TooManyPixels):
        decode_image(data, ImageLimits(max_pixels=399))
    assert decode_image(data, ImageLimits(max_pixels=400)).size == (20, 20)


def test_byte_limit(make_image_bytes):
    data = make_image_bytes("PNG", (20, 20))
    with pytest.raises(PayloadTooLarge) as info:
        probe_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert info.value.status == 413


def test_truncated_jpeg_is_corrupt():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _save(noisy, "JPEG", quality=90)
    with pytest.raises(CorruptImage) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status == 400


def test_empty_body():
    with pytest.raises(EmptyImage) as info:
        decode_image(b"")
    assert info.value.status == 400 and info.value.code == "empty_body"


def test_text_bytes_are_unsupported():
    with pytest.raises(UnsupportedImage) as info:
        decode_image(b"this is not an image, just some text\n" * 10)
    assert info.value.status == 415


def test_read_image_file_returns_image_and_bytes(tmp_path, make_image_bytes):
    data = make_image_bytes("PNG", (5, 7))
    (tmp_path / "x.png").write_bytes(data)
    img, raw = read_image_file(tmp_path / "x.png")
    assert raw == data and img.size == (5, 7)


def test_read_image_file_refuses_oversized_file_without_reading_it_all(tmp_path, make_image_bytes):
    path = tmp_path / "big.png"
    path.write_bytes(make_image_bytes("PNG", (64, 64)) + b"\0" * 5000)
    with pytest.raises(PayloadTooLarge):
        read_image_file(path, ImageLimits(max_bytes=1000))


def test_draft_side_decodes_a_jpeg_at_the_smallest_scale_still_covering_it(make_image_bytes):
    data = make_image_bytes("JPEG", (1600, 1200), color=(10, 120, 240))
    # 1/4 scale is 400x300 (longest side >= 300); 1/8 would be 200x150.
    assert decode_image(data, draft_side=300).size == (400, 300)
    assert decode_image(data, draft_side=2000).size == (1600, 1200)  # never below the full size
    assert decode_image(data).size == (1600, 1200)
    assert decode_image(make_image_bytes("PNG", (1600, 1200)), draft_side=300).size == (1600, 1200)


def test_draft_side_keeps_exif_orientation(make_image_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = make_image_bytes("JPEG", (800, 400), exif=exif.tobytes())
    assert decode_image(data, draft_side=200).size == (100, 200)
