"""Static int8 CRAFT (ONNX Runtime QDQ, calibrated on grocery train photos) against the shipped fp32 export.

Word recall and CPU-s per photo on grocery `val/Packages` with the real EasyOCR weights; writes
bench/results/accuracy/craft_int8.json. `python -m bench.craft_int8 [--calibration N]`
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
from shared.images import read_image_file

RESULTS = Path("bench/results/accuracy/craft_int8.json")


def craft_input(image) -> np.ndarray:
    """What EasyOCR feeds CRAFT for a photo: resized to a multiple of 32, normalised, NCHW float32."""
    import cv2
    from easyocr.imgproc import normalizeMeanVariance, resize_aspect_ratio

    resized, _, _ = resize_aspect_ratio(np.asarray(image), 2560, interpolation=cv2.INTER_LINEAR, mag_ratio=1.0)
    return np.transpose(normalizeMeanVariance(resized), (2, 0, 1))[None].astype(np.float32)


class Calibration:
    """ONNX Runtime's CalibrationDataReader over a list of photos."""

    def __init__(self, photos: list[Path]):
        self.inputs = iter([{"image": craft_input(read_image_file(p)[0])} for p in photos])

    def get_next(self) -> dict | None:
        return next(self.inputs, None)


def quantize(fp32: Path, out: Path, photos: list[Path]) -> Path:
    """Static int8 QDQ model of the fp32 export, activations calibrated on `photos` (MinMax)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(fp32), str(out), Calibration(photos), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def measure(reader, photos: list[Path], label: str) -> dict:
    """Word recall and CPU-s per photo of read_detections with the reader's current detector."""
    cpu, hits = [], 0
    for path in tqdm(photos, desc=label, unit="img"):
        image = read_image_file(path)[0]
        began = time.process_time()
        found = reader.read_detections(image)
        cpu.append(time.process_time() - began)
        hits += word_recall.hit(path, [d["text"] for d in found])
    return {"photos": len(photos), "word_recall": round(hits / len(photos), 3),
            "cpu_s_median": round(statistics.median(cpu), 3), "cpu_s_mean": round(statistics.fmean(cpu), 3)}


def main() -> None:
    from shared.features import craft_onnx
    from shared.features.ocr import OcrReader

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=Path("models/accuracy/weights"))
    parser.add_argument("--calibration", type=int, default=32)
    args = parser.parse_args()
    settings = Settings.from_env().replace(torch_threads=1)
    grocery = Path(settings.datasets_dir) / "grocery"
    train = sorted((grocery / "train").glob("*/*/*.jpg")) + sorted((grocery / "train").glob("*/*/*/*.jpg"))
    calibration = train[:: max(1, len(train) // args.calibration)][: args.calibration]
    val = sorted((grocery / "val" / "Packages").glob("*/*/*.jpg"))
    reader = OcrReader.load(args.weights, settings.replace(ocr_backend="onnx"))
    fp32_detector = reader.reader.detector
    fp32 = measure(reader, val, "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = quantize(fp32_detector.path, Path(tmp) / "craft.int8.onnx", calibration)
        reader.reader.detector = craft_onnx.OnnxCraft(craft_onnx.open_session(int8_path, 1), int8_path)
        int8 = measure(reader, val, "int8")
    result = {"fp32": fp32, "int8": int8, "calibration_photos": len(calibration),
              "recall_drop_points": round((fp32["word_recall"] - int8["word_recall"]) * 100, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
