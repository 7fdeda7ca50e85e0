"""Rendered text scenes that calibrate the static int8 CRAFT: the same every time, on every machine, from no user photo.

Static quantisation only needs the range of each activation over inputs like the real ones. These scenes hold what
CRAFT meets in review photos: printed words of many sizes, colours and angles on flat, gradient and noisy
backgrounds, blurred and JPEG-compressed like phone photos. Being generated from a fixed seed, the int8 detector is a
function of the CRAFT weights alone, so training and serving on different hosts build the same one.
ACCURACY.md ("Static int8 CRAFT") measures the word recall it keeps against the fp32 detector on real photos.
"""
from __future__ import annotations

import io
import random
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SCENES = 32
SEED = 0
# Words of the kind printed on packaging (Pillow's built-in font draws Latin letters, digits and signs).
_WORDS = ("ORGANIC", "Milk", "juice", "SOYA", "orange", "Apple", "NATURAL", "500g", "1,5 L", "fresh", "yoghurt",
          "Bio", "% fat", "PRESSED", "vanilla", "oat", "100%", "light", "Original",
          "KEEP REFRIGERATED", "best before 12.03", "Ingredients:")


def scenes(count: int = SCENES, seed: int = SEED) -> Iterator[Image.Image]:
    """`count` RGB scenes with text, 320-512 px a side (CRAFT sees small photos at OCR_DETECT_SIDE=512, others up to
    OCR_MAX_SIDE=640)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield _scene(rng)


def _scene(rng: random.Random) -> Image.Image:
    width, height = rng.randint(320, 512), rng.randint(240, 512)
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 12)):
        _shape(draw, rng, width, height)
    for _ in range(rng.randint(2, 10)):
        image = _words(image, rng)
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(55, 95))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """A vertical gradient between two colours, with sensor-like noise."""
    top, bottom = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    mix = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    pixels = np.broadcast_to(top * (1 - mix) + bottom * mix, (height, width, 3)).copy()
    generator = np.random.default_rng(rng.getrandbits(32))
    pixels += generator.normal(0, rng.uniform(0, 12), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _shape(draw: ImageDraw.ImageDraw, rng: random.Random, width: int, height: int) -> None:
    """A flat block of colour, as labels and packaging have."""
    x0, y0 = rng.randint(-width // 4, width), rng.randint(-height // 4, height)
    box = (x0, y0, x0 + rng.randint(20, width // 2), y0 + rng.randint(20, height // 2))
    (draw.ellipse if rng.random() < 0.3 else draw.rectangle)(box, fill=_colour(rng))


def _words(image: Image.Image, rng: random.Random) -> Image.Image:
    """One line of words, 10-80 px tall, dark on light or light on dark, at a small angle."""
    size = rng.randint(10, 80)
    font = ImageFont.load_default(size=size)
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
    left, top, right, bottom = font.getbbox(text)
    layer = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((4 - left, 4 - top), text, font=font, fill=(*_colour(rng), 255))
    layer = layer.rotate(rng.uniform(-12, 12), expand=True, resample=Image.Resampling.BICUBIC)
    x = rng.randint(-layer.width // 4, max(0, image.width - layer.width // 2))
    y = rng.randint(-layer.height // 4, max(0, image.height - layer.height // 2))
    image.paste(layer, (x, y), layer)
    return image
