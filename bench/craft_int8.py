"""Static int8 CRAFT (ONNX Runtime QDQ) against the fp32 export: word recall and CPU-s per photo.

Four detectors with the real EasyOCR weights: fp32; int8 as OCR_DETECTOR=int8 ships it (recipe 2: calibrated on the
rendered scenes of shared/features/craft_calibration.py, first convolution and score head kept fp32); recipe 1 (every
convolution int8, what shipped before); recipe 2 calibrated on grocery `train/` photos (what a user's own photos could
give). Read on grocery `val/Packages` and every 8th `train/Packages` photo (none of them calibrated on): one point of
recall is two photos, not one. Recipe 2's fp32 layers were chosen on other photos (`train/Packages`[1::4]).
Writes bench/results/accuracy/craft_int8.json.
`python -m bench.craft_int8 [--calibration N]`
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import word_recall
from shared.config import Settings
from shared.features import craft_onnx
from shared.images import read_image_file

RESULTS = Path("bench/results/accuracy/craft_int8.json")


def measure(reader, photos: list[Path], label: str) -> dict:
    """Word recall and CPU-s per photo of read_detections with the reader's current detector."""
    cpu, hits, words = [], [], []
    for path in tqdm(photos, desc=label, unit="img"):
        image = read_image_file(path)[0]
        began = time.process_time()
        found = reader.read_detections(image)
        cpu.append(time.process_time() - began)
        hits.append(bool(word_recall.hit(path, [d["text"] for d in found])))
        words.append(sorted(word_recall.read_words(d["text"] for d in found)))
    return {"photos": len(photos), "word_recall": round(sum(hits) / len(photos), 3), "hits": hits, "words": words,
            "cpu_s_median": round(statistics.median(cpu), 3), "cpu_s_mean": round(statistics.fmean(cpu), 3)}


def versus(fp32: dict, int8: dict) -> dict:
    """The recall drop in points, the photos behind it (read by fp32 only, by int8 only), and how alike the words are."""
    pairs = list(zip(fp32["hits"], int8["hits"]))
    words = [(set(a), set(b)) for a, b in zip(fp32["words"], int8["words"])]
    same = [len(a & b) / len(a | b) if a or b else 1.0 for a, b in words]
    return {"recall_drop_points": round((fp32["word_recall"] - int8["word_recall"]) * 100, 1),
            "lost": sum(a and not b for a, b in pairs), "gained": sum(b and not a for a, b in pairs),
            "word_jaccard": round(statistics.fmean(same), 3),
            "same_words": sum(a == b for a, b in words)}


def main() -> None:
    from shared.features.ocr import OcrReader

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("models/accuracy/weights"))
    parser.add_argument("--calibration", type=int, default=32)
    args = parser.parse_args()
    settings = Settings.from_env().replace(torch_threads=1)
    grocery = Path(settings.datasets_dir) / "grocery"
    train = sorted((grocery / "train").glob("*/*/*.jpg")) + sorted((grocery / "train").glob("*/*/*/*.jpg"))
    calibration = train[:: max(1, len(train) // args.calibration)][: args.calibration]
    photos = sorted((grocery / "val" / "Packages").glob("*/*/*.jpg"))
    photos += [p for p in sorted((grocery / "train" / "Packages").glob("*/*/*.jpg"))[3::8] if p not in calibration]
    reader = OcrReader.load(args.weights, settings.replace(ocr_backend="onnx", ocr_detector="fp32"))
    fp32_path = reader.reader.detector.path
    fp32 = measure(reader, photos, "fp32")
    result = {"fp32": fp32, "calibration_photos": len(calibration), "ocr_detect_side": reader.detect_side}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"int8": lambda out: craft_onnx.quantize_int8(fp32_path, out),
                    "int8_recipe1": lambda out: craft_onnx.quantize_int8(fp32_path, out, keep_fp32=()),
                    "int8_photos": lambda out: craft_onnx.quantize_int8(
                        fp32_path, out, (read_image_file(p)[0] for p in calibration))}
        for name, make in variants.items():
            began = time.perf_counter()
            path = make(Path(tmp) / f"craft.{name}.onnx")
            seconds = time.perf_counter() - began
            reader.reader.detector = craft_onnx.OnnxCraft(craft_onnx.open_session(path, 1), path)
            measured = measure(reader, photos, name)
            result[name] = {**measured, **versus(fp32, measured), "quantise_s": round(seconds, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
