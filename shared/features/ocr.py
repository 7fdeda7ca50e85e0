"""EasyOCR text reading: downscale, detect, recognise the largest boxes, normalise.

The longest-side cap (Settings.ocr_max_side, OCR_MAX_SIDE, default 640) bounds the cost of a photo of any size and
never enlarges the photo. OCR_DETECT_SIDE (default 512) enlarges only CRAFT's input of a smaller photo: CRAFT misses
small print on small photos, while the recogniser reads the photo's own pixels either way. Both were chosen from what
the real EasyOCR reads on grocery photos (ACCURACY.md, `make accuracy`): on 348 px photos CRAFT at 512 px reads ~8
points more product words for ~1.9x the CPU of a native read (~0.3 CPU-s instead of ~0.16 on one thread with the
int8 CRAFT), about what enlarging the whole photo to 640 px reads at ~1.4x that cost; a 12 MP photo capped at 640
still yields its product words in ~0.4-0.7 CPU-s, while 960 and 1280 cost 2x and 4x. OCR_MAX_BOXES (default 32)
bounds the recogniser, ~0.1 CPU-s a box. OCR_DETECTOR (auto: int8 on CPU, fp32 on CUDA) picks the CRAFT runtime.
All are part of the feature config, so models trained with other values are refused at serving.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import unicodedata
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from shared import weights
from shared.config import Settings
from shared.errors import WeightsMismatch, WeightsMissing
from shared.features import craft_onnx

BACKENDS = ("onnx", "torch")
# Pillow shrinks by an integer factor with a box filter first and resamples only the last <3x with LANCZOS:
# documented as indistinguishable from a full LANCZOS pass from 3.0 on, and ~5x cheaper for a 12 MP photo.
REDUCING_GAP = 3.0

log = logging.getLogger(__name__)

# EasyOCR's own calls trip these on every CPU load/read; they say nothing a user can act on.
warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true", category=UserWarning)
warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel", category=UserWarning)

# Kept: digits, Latin (incl. accented) and Cyrillic letters. Everything else is noise between words.
_NOISE = re.compile(r"[^0-9a-z\u00df-\u00ff\u0100-\u024f\u0430-\u045f\u0460-\u04ff]+")
_md5_patch_lock = threading.Lock()


def normalise_text(text: str) -> str:
    """NFKC, lowercase, noise characters to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NOISE.sub(" ", text).split())


def ocr_config(info: dict, settings: Settings, recorded: dict | None = None) -> dict:
    """The feature config of OCR weights (what a trained model must be served with).

    Languages, sides, box cap and detector come from the recorded config when given (serving what was trained), else
    from settings; empty OCR_LANGS means the weights' own languages.
    """
    langs = list(recorded["langs"]) if recorded else (settings.ocr_lang_list() or list(info["langs"]))
    check_langs(langs, info)
    config = {
        "kind": "ocr",
        "langs": langs,
        "max_side": int(recorded["max_side"]) if recorded else settings.ocr_max_side,
        # Models trained before the cap read every box: their recorded config has no max_boxes (0 = no cap).
        "max_boxes": int(recorded.get("max_boxes", 0)) if recorded else settings.ocr_max_boxes,
        # Models trained before it showed CRAFT the image at its own size (0 = never enlarge).
        "detect_side": int(recorded.get("detect_side", 0)) if recorded else settings.ocr_detect_side,
        # int8 and fp32 CRAFT find slightly different boxes; models trained before int8 existed used fp32.
        "detector": recorded.get("detector", "fp32") if recorded else resolve_detector(settings),
        "weights_sha256": weights.ocr_weights_sha256(info),
        "synthetic": bool(info["synthetic"]),
    }
    if config["detector"] == "int8":
        config["int8_recipe"] = _check_int8_recipe(recorded)
    return config


def resolve_detector(settings: Settings) -> str:
    """OCR_DETECTOR as trained: auto is int8 on CPU (a whole read ~2.4-2.8x cheaper) and fp32 on CUDA, where it runs."""
    if settings.ocr_detector == "auto":
        return "int8" if weights.torch_device(settings) == "cpu" else "fp32"
    return _check_detector(settings.ocr_detector)


def _check_int8_recipe(recorded: dict | None) -> int:
    """The int8 recipe built here; a model trained on another one (its boxes differ) is refused, naming both."""
    trained = int(recorded.get("int8_recipe", 1)) if recorded else craft_onnx.INT8_RECIPE
    if trained != craft_onnx.INT8_RECIPE:
        raise WeightsMismatch(
            f"This model was trained with int8 CRAFT recipe {trained} (every layer int8); this version builds recipe "
            f"{craft_onnx.INT8_RECIPE} (first convolution and score head in fp32), which finds slightly different "
            "boxes. Retrain the model (`python -m shared train`), or serve it with the version it was trained with."
        )
    return trained


def check_langs(langs: Sequence[str], info: dict) -> None:
    """Refuse languages the weights' recogniser was not recorded as serving (EasyOCR would load another file)."""
    if set(langs) != set(info["langs"]):
        raise WeightsMismatch(
            f"OCR languages {','.join(langs)} were asked for, but the recogniser in the weights folder "
            f"({info.get('recognizer', '?')}) serves {','.join(info['langs'])}. Set OCR_LANGS={','.join(info['langs'])} "
            "(or leave it empty), or get the recogniser for those languages (`python -m shared weights`, or "
            "`--from PATH` offline)."
        )


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longest side is <= max_side, keeping the aspect ratio; never enlarge."""
    width, height = image.size
    scale = max_side / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


@contextmanager
def accept_synthetic_md5(folder: Path, info: dict) -> Iterator[None]:
    """While building a Reader, answer EasyOCR's MD5 check for our synthetic files only.

    EasyOCR compares every weight file with the MD5 of its released file; random weights can never match.
    Our own sha256 check (weights.require_weights) has already run. Real weights keep EasyOCR's check.
    """
    if not info.get("synthetic"):
        yield
        return
    module = importlib.import_module("easyocr.easyocr")
    original = module.calculate_md5
    expected = _released_md5s()
    synthetic = {os.path.realpath(folder / name): expected[name] for name in info["files"] if name in expected}

    def calculate_md5(fname: str) -> str:
        return synthetic.get(os.path.realpath(fname)) or original(fname)

    with _md5_patch_lock:
        module.calculate_md5 = calculate_md5
        try:
            yield
        finally:
            module.calculate_md5 = original


def _released_md5s() -> dict[str, str]:
    from easyocr.config import detection_models, recognition_models

    entries = list(detection_models.values())
    entries += [entry for group in recognition_models.values() for entry in group.values()]
    return {entry["filename"]: entry["md5sum"] for entry in entries}


class OcrReader:
    """Image -> normalised text. Load once, read many times."""

    kind = "ocr"
    batchable = False  # EasyOCR reads one image at a time: batching requests would only make them wait
    embedding_map = False

    def __init__(self, reader: Any, info: dict, settings: Settings, backend: str = "torch",
                 recorded: dict | None = None):
        self.reader = reader
        self.info = info
        self.settings = settings
        self.backend = backend  # the CRAFT runtime actually in use: "onnx-int8", "onnx" or "torch"
        self.config = ocr_config(info, settings, recorded)
        self.max_side: int = self.config["max_side"]
        self.max_boxes: int = self.config["max_boxes"]
        self.detect_side: int = self.config["detect_side"]
        # OCR_MAX_SIDE caps CRAFT's input too: it bounds the cost of a whole read.
        self.craft_side: int = min(self.detect_side, self.max_side)
        self.synthetic = self.config["synthetic"]

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
        """The config a loaded reader would report, from weights.json without loading the models."""
        return ocr_config(weights.read_section(weights_dir, cls.kind), settings, recorded)

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "OcrReader":
        """Verify the weights and build easyocr.Reader from the weights folder, never downloading.

        With a recorded config, its languages, sides, box cap and detector are used instead of the settings'.
        """
        import easyocr

        backend = _check_backend(settings.ocr_backend)
        info = weights.require_weights(weights_dir, cls.kind)
        weights.configure_torch(settings)
        folder = Path(weights_dir) / weights.OCR_DIR
        if info["synthetic"]:
            log.warning("EasyOCR uses SYNTHETIC (random) weights: the text it reads is noise")
        config = ocr_config(info, settings, recorded)
        try:
            with accept_synthetic_md5(folder, info):
                reader = easyocr.Reader(
                    config["langs"], gpu=weights.torch_device(settings) == "cuda",
                    model_storage_directory=str(folder), user_network_directory=str(folder),
                    download_enabled=False, verbose=False,
                )
        except FileNotFoundError as exc:
            raise WeightsMissing(f"EasyOCR could not use {folder}: {exc}. {weights.FETCH_HINT}") from None
        _channels_last_recogniser(reader)
        backend = _install_detector(reader, folder, info, backend, settings, config["detector"])
        log.info("EasyOCR CRAFT detector: %s on %s", config["detector"], backend)
        return cls(reader, info, settings, backend, recorded)

    @staticmethod
    def weight_files(info: dict) -> dict[str, str]:
        """{path relative to the weights folder: sha256}: the detector and the recogniser."""
        return {f"{weights.OCR_DIR}/{name}": sha for name, sha in info["files"].items()}

    @staticmethod
    def encode(value: str) -> str:
        """A text as the feature cache stores it: itself."""
        return str(value)

    @staticmethod
    def decode(stored: str) -> str:
        """The inverse of encode."""
        return stored

    @staticmethod
    def stack(values: Sequence[str], config: dict) -> list[str]:
        """Many texts as the learners' input: a list of str."""
        return list(values)

    @staticmethod
    def describe(config: dict) -> str:
        """'EasyOCR ru,en'."""
        return f"EasyOCR {','.join(config.get('langs', []))}"

    @classmethod
    def feature_notes(cls, values: Sequence[Sequence[str]]) -> list[str]:
        """How many images OCR found text in: without it, an OCR member at chance level looks like a bug."""
        from shared.members import member, member_names

        texts = [text for side in values for text in side]
        found = sum(1 for text in texts if text)
        readers = " and ".join(name for name in member_names() if member(name).extractor == cls.kind)
        # Synthetic CRAFT finds no text at all.
        return [f"OCR found text in {found} of {len(texts)} images"
                + (f"; {readers} can only answer the class priors" if found == 0 else "")]

    @staticmethod
    def write_synthetic(out: Path, settings: Settings, tiny: bool = False) -> dict:
        """CRAFT and the recogniser for OCR_LANGS randomly initialised; its weights.json section."""
        return weights.write_synthetic_ocr(out, settings)

    @staticmethod
    def fetch_weights(out: Path, settings: Settings, timeout_s: float) -> dict:
        """EasyOCR's CRAFT and the recogniser for OCR_LANGS, verified by their MD5s; its section."""
        return weights.fetch_ocr_weights(out, settings, timeout_s)

    @staticmethod
    def find_weights(found: dict[str, Path], settings: Settings) -> dict | None:
        """CRAFT and the wanted recogniser among found, verified by their MD5s."""
        from shared.weights import offline

        return offline.find_ocr_files(found, settings)

    @staticmethod
    def store_weights(part: dict, out: Path, settings: Settings) -> dict:
        """The found files copied into out/easyocr; its section."""
        from shared.weights import offline

        return offline.store_ocr_files(part, out, settings)

    @staticmethod
    def wanted_files(settings: Settings) -> str:
        """'EasyOCR craft_mlt_25k.pth + a recogniser (...)'."""
        from shared.weights import offline

        return offline.wanted_ocr_files(settings)

    def extract(self, images: list[Image.Image]) -> list[str]:
        """read() for each image, in order."""
        return [self.read(image) for image in images]

    def read(self, image: Image.Image) -> str:
        """Downscale to max_side, detect text boxes, recognise them, return normalised text."""
        rgb, grey = _arrays(downscale(image.convert("RGB"), self.max_side))
        horizontal, free = self._detect(rgb)
        return self._recognise(grey, horizontal, free)

    def _detect(self, rgb: np.ndarray) -> tuple[list, list]:
        """CRAFT's boxes (horizontal, free-form), at most max_boxes of them: the largest text first."""
        magnification = detect_magnification(rgb, self.craft_side)
        horizontal, free = self.reader.detect(rgb, reformat=False, mag_ratio=magnification)
        return largest_boxes(horizontal[0], free[0], self.max_boxes)

    def read_detections(self, image: Image.Image) -> list[dict]:
        """What read() sees, box by box: normalised text, recogniser confidence, box as fractions of the image."""
        small = downscale(image.convert("RGB"), self.max_side)
        rgb, grey = _arrays(small)
        horizontal, free = self._detect(rgb)
        if not horizontal and not free:
            return []
        found = self.reader.recognize(grey, horizontal, free, detail=1, reformat=False)
        width, height = small.size
        return [_detection(box, text, conf, width, height) for box, text, conf in found if normalise_text(text)]

    def read_many(self, images: Sequence[Image.Image], progress: bool = False) -> list[str]:
        """read() for each image, in order."""
        if progress:
            from tqdm import tqdm

            images = tqdm(images, desc="OCR", unit="img")
        return [self.read(image) for image in images]

    def recognize_boxes(self, image: Image.Image, boxes: Sequence[Sequence[int]]) -> str:
        """Recognise given (x_min, x_max, y_min, y_max) boxes, skipping detection; image is not rescaled."""
        _, grey = _arrays(image.convert("RGB"))
        return self._recognise(grey, [list(map(int, box)) for box in boxes], [])

    def _recognise(self, grey: np.ndarray, horizontal: list, free: list) -> str:
        if not horizontal and not free:
            return ""
        parts = self.reader.recognize(grey, horizontal, free, detail=0, reformat=False)
        return normalise_text(" ".join(parts))


def _check_detector(detector: str) -> str:
    if detector not in craft_onnx.DETECTORS:
        raise ValueError(f"OCR_DETECTOR must be one of auto, {', '.join(craft_onnx.DETECTORS)}; got {detector!r}")
    return detector


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"OCR_BACKEND must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def _channels_last_recogniser(reader: Any) -> None:
    """On CPU the recogniser's convolutions run faster in channels-last layout, same texts (BENCHMARKS.md)."""
    if reader.device == "cpu":
        import torch

        reader.recognizer = reader.recognizer.to(memory_format=torch.channels_last)


def _install_detector(reader: Any, folder: Path, info: dict, backend: str, settings: Settings, detector: str) -> str:
    """Swap EasyOCR's CRAFT for its ONNX Runtime int8 or fp32 export as asked; returns the runtime in use.

    int8 always runs (on ONNX Runtime's CPU provider, GPU or not): it is part of the feature config, so falling back
    to fp32 would change the features a model was trained on. fp32 runs on torch when ONNX Runtime cannot.
    """
    from easyocr.config import detection_models

    craft_sha256 = info["files"][detection_models[weights.DETECTOR]["filename"]]
    if detector == "int8":
        reader.detector = craft_onnx.load_detector(reader.detector, folder, craft_sha256, settings.torch_threads, "int8")
        return "onnx-int8"
    if backend == "torch" or reader.device != "cpu":
        return "torch"
    try:
        reader.detector = craft_onnx.load_detector(reader.detector, folder, craft_sha256, settings.torch_threads)
    except Exception as exc:  # noqa: BLE001 - no onnxruntime/onnx, or an export error: torch still reads text
        log.warning("OCR_BACKEND=onnx is unavailable (%s: %s); CRAFT runs on torch", type(exc).__name__, exc)
        return "torch"
    return "onnx"


def detect_magnification(rgb: np.ndarray, detect_side: int) -> float:
    """How much CRAFT enlarges the image (EasyOCR's mag_ratio): up to a longest side of detect_side, never down.

    CRAFT misses small print on small photos; enlarged for the detector only, the boxes come back in the image's
    own coordinates and the recogniser reads the image's own pixels, so the recogniser costs the same.
    """
    longest = max(rgb.shape[:2])
    return max(1.0, detect_side / longest) if detect_side and longest else 1.0


def largest_boxes(horizontal: list, free: list, max_boxes: int) -> tuple[list, list]:
    """At most max_boxes boxes (0 = all), the largest by area, in their original order.

    The recogniser costs ~0.1 CPU-s per box: a photo full of small print would otherwise outlast the gateway's
    member timeout, and a product's name is among its largest text.
    """
    if max_boxes <= 0 or len(horizontal) + len(free) <= max_boxes:
        return horizontal, free
    areas = [(x1 - x0) * (y1 - y0) for x0, x1, y0, y1 in horizontal] + [_area(points) for points in free]
    keep = set(sorted(range(len(areas)), key=lambda i: -areas[i])[:max_boxes])
    n = len(horizontal)
    return [b for i, b in enumerate(horizontal) if i in keep], [b for i, b in enumerate(free) if i + n in keep]


def _area(points: Sequence) -> float:
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return (max(xs) - min(xs)) * (max(ys) - min(ys))


def _detection(box: Sequence, text: str, conf: float, width: int, height: int) -> dict:
    xs, ys = [float(p[0]) for p in box], [float(p[1]) for p in box]
    return {"text": normalise_text(text), "conf": round(float(conf), 4),
            "box": [round(min(xs) / width, 4), round(min(ys) / height, 4),
                    round(max(xs) / width, 4), round(max(ys) / height, 4)]}


def _arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    # What easyocr.readtext builds from a file: RGB for the detector, luma for the recogniser.
    return np.asarray(image), np.asarray(image.convert("L"))


def prepare_detectors(weights_dir: Path, settings: Settings) -> list[Path]:
    """Build the cached CRAFT runtimes (fp32 ONNX export, int8) next to the weights, as a first load would."""
    paths = []
    for detector in craft_onnx.DETECTORS:
        reader = OcrReader.load(weights_dir, settings.replace(ocr_detector=detector, ocr_backend="onnx"))
        paths.append(getattr(reader.reader.detector, "path", None))
    return [path for path in paths if path is not None]


if __name__ == "__main__":  # `python -m shared.features.ocr WEIGHTS_DIR`: what an image with baked weights runs once
    import sys

    logging.basicConfig(level=logging.INFO)
    for built in prepare_detectors(Path(sys.argv[1]), Settings.from_env()):
        print(built)
