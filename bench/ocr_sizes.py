"""Choose the OCR size from real text: word recall and CPU-s per photo at several longest sides (real EasyOCR, en).

Reads grocery `val/Packages` photos (348 px) at their native size, with only CRAFT's input enlarged to
OCR_DETECT_SIDE, and enlarged to 640, 960 and 1280 px; a 12 MP photo (a grocery photo enlarged to 4000x3000) capped
at each size; a page full of text. OCR_DETECT_SIDE was chosen on other photos (every 4th `train/Packages` photo from
the second), read with CRAFT's input enlarged to each of DETECT_SIDES. Writes bench/results/accuracy/ocr_sizes.json.
`python -m bench.ocr_sizes [--per-class N]`
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from PIL import Image
from tqdm import tqdm

from bench import word_recall
from shared.config import Settings
from shared.images import ImageLimits, decode_image, read_image_file

SIDES = (0, 640, 960, 1280)  # 0 = native size
DETECT_SIDES = (0, 436, 512, 640)  # 348 px photos: CRAFT's input x1, x1.25, x1.47, x1.84 (640: the default cap)
BIG = (4000, 3000)
RESULTS = Path("bench/results/accuracy/ocr_sizes.json")


def sample(datasets: Path, per_class: int) -> list[Path]:
    """The first `per_class` photos of every val/Packages product folder."""
    folders = sorted(p for p in (datasets / "grocery" / "val" / "Packages").glob("*/*") if p.is_dir())
    return [photo for folder in folders for photo in sorted(folder.glob("*.jpg"))[:per_class]]


def selection(datasets: Path) -> list[Path]:
    """The photos OCR_DETECT_SIDE was chosen on: every 4th train/Packages photo from the second (not val/)."""
    return sorted((datasets / "grocery" / "train" / "Packages").glob("*/*/*.jpg"))[1::4]


def enlarged(image: Image.Image, side: int) -> Image.Image:
    """The photo with its longest side at `side` (LANCZOS); native when side is 0 or not larger."""
    scale = side / max(image.size) if side else 1.0
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def measure_side(reader, photos: list[tuple[Path, Image.Image]], side: int) -> dict:
    """Recall and CPU-s per photo when every photo is read at this longest side."""
    cpu, hits, boxes = [], 0, 0
    label = f"side {side or 'native'}, CRAFT input {reader.detect_side or 'as read'}"
    for path, image in tqdm(photos, desc=label, unit="img"):
        big = enlarged(image, side)
        began = time.process_time()
        found = reader.read_detections(big)
        cpu.append(time.process_time() - began)
        hits += word_recall.hit(path, [d["text"] for d in found])
        boxes += len(found)
    return {"side": side or "native", "detect_side": reader.detect_side, "photos": len(photos),
            "word_recall": round(hits / len(photos), 3), "cpu_s_median": round(statistics.median(cpu), 3),
            "cpu_s_mean": round(statistics.fmean(cpu), 3), "boxes_per_photo": round(boxes / len(photos), 2)}


def measure_big(reader_with: Callable[..., Any], photo: Path, repeats: int = 3) -> list[dict]:
    """Decode + read a 12 MP JPEG capped at each side: CPU-s (median of repeats) and what was read."""
    image, _ = read_image_file(photo, ImageLimits(10**9, 10**9))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        big_path = Path(tmp) / "big.jpg"
        image.resize(BIG, Image.Resampling.BICUBIC).save(big_path, quality=90)
        for side in SIDES[1:]:
            reader = reader_with(ocr_max_side=side)
            cpu = []
            for _ in range(repeats):
                began = time.process_time()
                decoded = decode_image(big_path.read_bytes(), ImageLimits(10**9, 10**9), draft_side=side)
                found = reader.read_detections(decoded)
                cpu.append(time.process_time() - began)
            rows.append({"side": side, "cpu_s_median": round(statistics.median(cpu), 3),
                         "words": sorted(word_recall.read_words(d["text"] for d in found))[:12]})
    return rows


def text_page(size: tuple[int, int] = (1600, 1200), lines: int = 40) -> Image.Image:
    """A photo full of text (the worst case for the recogniser): `lines` lines of words across the page."""
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=size[1] // (lines + 8))
    words = "organic apple juice milk yoghurt vanilla orange soy oat fresh natural tropicana alpro".split()
    for row in range(lines):
        text = " ".join(words[(row + i) % len(words)] for i in range(9))
        draw.text((20, 20 + row * size[1] // (lines + 2)), text, fill="black", font=font)
    return image


def measure_text_page(reader_with: Callable[..., Any], settings: Settings, repeats: int = 3) -> dict:
    """CPU-s to read a page full of text with the default cap (OCR_MAX_BOXES) and with every box read."""
    page, out = text_page(), {}
    for name, max_boxes in (("text_page", settings.ocr_max_boxes), ("text_page_uncapped", 0)):
        reader, cpu, found = reader_with(ocr_max_boxes=max_boxes), [], []
        for _ in range(repeats):
            began = time.process_time()
            found = reader.read_detections(page)
            cpu.append(time.process_time() - began)
        out[name] = {"size": list(page.size), "max_side": settings.ocr_max_side, "max_boxes": max_boxes,
                     "boxes": len(found), "cpu_s_median": round(statistics.median(cpu), 3),
                     "member_timeout_s": settings.member_timeout_s}
    return out


def main() -> None:
    from shared.features.ocr import OcrReader

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("models/accuracy/weights"))
    parser.add_argument("--per-class", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.from_env().replace(torch_threads=1)
    from bench.accuracy import ensure_weights

    ensure_weights(args.weights, settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    photos = [(p, read_image_file(p, limits)[0]) for p in sample(Path(settings.datasets_dir), args.per_class)]
    # The cap never enlarges, so one reader with a cap above every size reads each enlarged copy as it is.
    reader = OcrReader.load(args.weights, settings.replace(ocr_max_side=max(SIDES), ocr_detect_side=0))
    sides = [measure_side(reader, photos, side) for side in SIDES]

    # The same loaded EasyOCR reader, seen through other settings (sides, cap on boxes): one load for all.
    def reader_with(**changes: int) -> OcrReader:
        return OcrReader(reader.reader, reader.info, settings.replace(**changes), reader.backend)

    # The default enlarges CRAFT's input alone: the photos at native size, the detector's at OCR_DETECT_SIDE.
    sides.insert(1, measure_side(reader_with(ocr_max_side=max(SIDES)), photos, 0))
    chosen_on = [(p, read_image_file(p, limits)[0]) for p in selection(Path(settings.datasets_dir))]
    detect_sides = [measure_side(reader_with(ocr_detect_side=side), chosen_on, 0)
                    for side in DETECT_SIDES]  # OCR_MAX_SIDE (640) caps CRAFT's input too: no candidate above it
    big = measure_big(reader_with, photos[0][0])
    page = measure_text_page(reader_with, settings)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"sides": sides, "detect_sides": detect_sides, "big_12mp": big, **page,
                                   "ocr_detect_side": settings.ocr_detect_side, "backend": reader.backend,
                                   "weights": "real EasyOCR (craft_mlt_25k + english_g2)"}, indent=2))
    print(json.dumps({"sides": sides, "detect_sides": detect_sides, "big_12mp": big, **page}, indent=2))


if __name__ == "__main__":
    main()
