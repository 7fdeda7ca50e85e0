"""OCR path timings: one 348 px grocery photo and one 12 MP photo through OcrReader, and the recogniser alone."""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Callable

from PIL import Image

from shared.config import Settings
from shared.images import ImageLimits, decode_image

TWELVE_MP = 12_000_000
MAX_SIDE_SWEEP = (480, 640, 800)  # the longest-side cap trades OCR detail for time


def timed(fn: Callable[[], object], repeats: int) -> dict:
    """Median and min wall seconds of `repeats` calls (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def upscaled_jpeg(photo: Path, pixels: int = TWELVE_MP) -> bytes:
    """A real photo upscaled to about `pixels` pixels, as camera-like JPEG bytes."""
    image = Image.open(photo).convert("RGB")
    scale = (pixels / (image.width * image.height)) ** 0.5
    big = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=90)
    return out.getvalue()


def word_boxes(image: Image.Image, count: int) -> list[list[int]]:
    """`count` word-sized boxes (x_min, x_max, y_min, y_max) in a 4-column grid, like CRAFT's on a label."""
    width, height = max(24, image.width // 5), max(12, image.height // 24)
    return [[(i % 4) * image.width // 4 + 4, (i % 4) * image.width // 4 + 4 + width,
             (i // 4) * height * 2 + 4, (i // 4) * height * 2 + 4 + height] for i in range(count)]


def load_reader(weights_dir: Path, settings: Settings, quantize: bool):
    """OcrReader over an easyocr.Reader built with or without EasyOCR's dynamic int8 quantisation."""
    import easyocr

    from shared import weights
    from shared.features.ocr import OcrReader, accept_synthetic_md5

    info = weights.require_weights(weights_dir, "ocr")
    weights.configure_torch(settings)
    folder = Path(weights_dir) / weights.OCR_DIR
    with accept_synthetic_md5(folder, info):
        reader = easyocr.Reader(settings.ocr_lang_list() or info["langs"], gpu=weights.torch_device(settings) == "cuda",
                                model_storage_directory=str(folder), user_network_directory=str(folder),
                                download_enabled=False, verbose=False, quantize=quantize)
    return OcrReader(reader, info, settings)


def optimised_detector(detector):
    """CRAFT for CPU inference: batch norm folded into the convolutions (torch.fx), channels-last layout."""
    import torch
    from torch.fx.experimental.optimization import fuse

    return fuse(detector).to(memory_format=torch.channels_last)


def bench_ocr(weights_dir: Path, photo: Path, settings: Settings, repeats: int = 5) -> dict:
    """read() of a 348 px and a 12 MP photo as shipped and with other CRAFT runtimes; the recogniser alone."""
    import torch

    from shared.features.ocr import OcrReader, downscale

    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    small = Image.open(photo).convert("RGB")
    big_bytes = upscaled_jpeg(photo)
    big = decode_image(big_bytes, limits)
    capped = downscale(big, settings.ocr_max_side)
    few = max(1, repeats // 2)  # for the comparisons; the goal's own figure gets every repeat
    reader = OcrReader.load(weights_dir, settings)
    fp32 = OcrReader.load(weights_dir, settings.replace(ocr_detector="fp32", ocr_backend="onnx"))
    craft_as_read = OcrReader(reader.reader, reader.info, settings.replace(ocr_detect_side=0))  # OCR_DETECT_SIDE=0
    easyocr_own = load_reader(weights_dir, settings, quantize=True)  # EasyOCR's detector as it builds it
    candidate = load_reader(weights_dir, settings, quantize=True)
    candidate.reader.detector = optimised_detector(candidate.reader.detector)
    result = {
        "photo": str(photo), "torch_threads": torch.get_num_threads(), "ocr_max_side": settings.ocr_max_side,
        "ocr_detect_side": settings.ocr_detect_side, "backend": getattr(reader, "backend", "torch"),
        "big_size": list(big.size), "big_jpeg_bytes": len(big_bytes),
        "decode_12mp": timed(lambda: decode_image(big_bytes, limits), repeats),
        "read_348": timed(lambda: reader.read(small), repeats),
        "read_348_fp32": timed(lambda: fp32.read(small), few),
        "read_348_detect_native": timed(lambda: craft_as_read.read(small), few),
        "read_12mp": timed(lambda: reader.read(big), repeats),
        "decode_and_read_12mp": timed(lambda: reader.read(decode_image(big_bytes, limits)), repeats),
        "detector_variants_read_12mp": {
            f"as shipped (OcrReader.load: CRAFT on {getattr(reader, 'backend', 'torch')})":
                timed(lambda: reader.read(big), few),
            "fp32 CRAFT on ONNX Runtime (OCR_DETECTOR=fp32)": timed(lambda: fp32.read(big), few),
            "EasyOCR's own CRAFT (torch eager, NCHW)": timed(lambda: easyocr_own.read(big), few),
            "torch CRAFT, batch norm fused + channels-last": timed(lambda: candidate.read(big), few),
        },
        "max_side_sweep_12mp": {
            side: timed(lambda side=side: OcrReader(reader.reader, reader.info, settings.replace(ocr_max_side=side))
                        .read(big), few)
            for side in MAX_SIDE_SWEEP},
    }
    result["recognizer"] = bench_recogniser(
        {"as shipped (int8, channels-last)": reader, "EasyOCR's own (int8, NCHW)": easyocr_own,
         "EasyOCR quantize=False (fp32, NCHW)": load_reader(weights_dir, settings, quantize=False)},
        small, capped, repeats)
    return result


def bench_recogniser(readers: dict, small: Image.Image, capped: Image.Image, repeats: int) -> dict:
    """recognize_boxes on word-sized boxes with each reader (EasyOCR recognises them one by one on CPU)."""
    return {name: {"348_8_boxes": timed(lambda r=reader: r.recognize_boxes(small, word_boxes(small, 8)), repeats),
                   "12mp_capped_16_boxes": timed(lambda r=reader: r.recognize_boxes(capped, word_boxes(capped, 16)),
                                                 repeats)}
            for name, reader in readers.items()}
