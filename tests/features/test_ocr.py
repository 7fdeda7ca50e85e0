"""OcrReader on SYNTHETIC full-size CRAFT + cyrillic_g2: loads, reads, downscales, normalises; torch and ONNX CRAFT."""
from __future__ import annotations

import copy
import importlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from shared.features import craft_onnx
from shared.config import Settings
from shared.errors import SettingsError, WeightsMismatch, WeightsMissing
from shared.features.ocr import detect_magnification, largest_boxes, OcrReader, downscale, normalise_text

MAX_SIDE = 128
GROCERY_PHOTO = "grocery/train/Packages/Juice/Tropicana-Mandarin-Morning/Tropicana-Mandarin-Morning_008.jpg"


@pytest.fixture(scope="module")
def reader(tiny_weights) -> OcrReader:
    return OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_max_side=MAX_SIDE, ocr_backend="torch",
                                                 ocr_detector="fp32"))


@pytest.fixture(scope="module")
def onnx_reader(tiny_weights) -> OcrReader:
    # The first ONNX load exports CRAFT next to the session's weights; later loads reuse the file.
    return OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_max_side=MAX_SIDE, ocr_backend="onnx",
                                                 ocr_detector="fp32"))


@pytest.fixture(scope="module")
def int8_reader(tiny_weights) -> OcrReader:
    # The first int8 load quantises the fp32 export next to the weights (calibrated on the rendered scenes).
    return OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_max_side=MAX_SIDE, ocr_detector="int8"))


def _craft_file(weights_dir) -> str:
    return json.loads((weights_dir / "weights.json").read_text())["ocr"]["files"]["craft_mlt_25k.pth"]


def _text_image(size: tuple[int, int] = (160, 48)) -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((6, 16), "MOLOKO 3.2%", fill="black")
    return img


def test_read_with_synthetic_weights_returns_normalised_text(reader):
    text = reader.read(_text_image())
    assert isinstance(text, str) and text == normalise_text(text)


def test_read_many_keeps_order_and_length(reader):
    texts = reader.read_many([_text_image(), Image.new("L", (40, 30), 255)], progress=False)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_recognize_boxes_runs_the_recogniser(reader):
    text = reader.recognize_boxes(_text_image(), [(0, 160, 8, 40), (0, 80, 0, 48)])
    assert isinstance(text, str) and text == normalise_text(text)
    assert reader.recognize_boxes(_text_image(), []) == ""


def test_image_is_downscaled_before_detection(reader):
    seen = []
    hook = reader.reader.detector.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    try:
        reader.read(Image.new("RGB", (1000, 400), "white"))
    finally:
        hook.remove()
    # 1000x400 -> 128x51, which CRAFT pads up to multiples of 32; OCR_DETECT_SIDE (512) does not enlarge it past
    # OCR_MAX_SIDE (128): the cap bounds the whole read.
    assert reader.detect_side == 512 and reader.craft_side == MAX_SIDE
    assert seen == [(1, 3, 64, 128)]


def test_onnx_and_torch_detectors_agree_on_a_photo(reader, onnx_reader):
    assert reader.backend == "torch" and onnx_reader.backend == "onnx"
    photo = Image.open(Settings.from_env().datasets_dir / GROCERY_PHOTO).convert("RGB")
    for size in ((256, 192), (320, 96)):  # two aspect ratios: height and width are dynamic in the export
        rgb = np.asarray(photo.resize(size), dtype=np.float32)
        normalised = (rgb - np.float32([123.7, 116.3, 103.5])) / np.float32([58.4, 57.1, 57.4])  # CRAFT's
        x = torch.from_numpy(normalised.transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            expected, actual = reader.reader.detector(x)[0], onnx_reader.reader.detector(x)[0]
        assert actual.shape == expected.shape == (1, size[1] // 2, size[0] // 2, 2)
        assert torch.allclose(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


def test_onnx_reader_reads_like_the_torch_one(reader, onnx_reader):
    image = Image.new("RGB", (1000, 400), "white")
    assert onnx_reader.read(image) == reader.read(image)
    assert onnx_reader.read_many([_text_image()]) == reader.read_many([_text_image()])
    assert onnx_reader.config == reader.config  # the runtime is not part of the feature contract


def test_onnx_export_is_cached_next_to_the_weights_by_craft_sha256(onnx_reader, tiny_weights):
    path = craft_onnx.onnx_path(tiny_weights / "easyocr", _craft_file(tiny_weights))
    assert onnx_reader.reader.detector.path == path and path.is_file()
    before = path.stat().st_mtime_ns
    # A cached export is reused as is: no detector is needed and the file is not written again.
    assert craft_onnx.cached_export(None, tiny_weights / "easyocr", _craft_file(tiny_weights)) == path
    assert path.stat().st_mtime_ns == before


def test_unusable_onnx_file_falls_back_to_torch(onnx_reader, tiny_weights, tmp_path, caplog):
    folder = tmp_path / "w"
    shutil.copytree(tiny_weights, folder, copy_function=os.link)
    broken = craft_onnx.onnx_path(folder / "easyocr", _craft_file(folder))
    broken.unlink()  # a hard link: never write through it into the session fixture
    broken.write_bytes(b"not an onnx graph")
    fallback = OcrReader.load(folder, Settings(torch_threads=1, ocr_backend="onnx", ocr_detector="fp32"))
    assert fallback.backend == "torch" and "CRAFT runs on torch" in caplog.text
    assert isinstance(fallback.read(_text_image()), str)


def test_the_int8_detector_is_cached_next_to_the_weights(int8_reader, onnx_reader, tiny_weights):
    path = craft_onnx.onnx_path(tiny_weights / "easyocr", _craft_file(tiny_weights), "int8")
    assert int8_reader.backend == "onnx-int8" and int8_reader.config["detector"] == "int8"
    assert int8_reader.reader.detector.path == path and path.is_file()
    assert onnx_reader.config["detector"] == "fp32" and onnx_reader.config != int8_reader.config
    # The quantised graph holds int8 weights: a quarter of the fp32 export's size, give or take the QDQ nodes.
    assert path.stat().st_size < 0.35 * onnx_reader.reader.detector.path.stat().st_size
    before = path.stat().st_mtime_ns
    # A cached int8 file is reused as is: no detector is needed and the file is not written again.
    assert craft_onnx.cached_int8(None, tiny_weights / "easyocr", _craft_file(tiny_weights)) == path
    assert path.stat().st_mtime_ns == before
    assert isinstance(int8_reader.read(_text_image()), str)


def test_the_int8_detector_keeps_its_two_ends_in_fp32(int8_reader):
    import onnx

    graph = onnx.load(str(int8_reader.reader.detector.path)).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    quantised = {node.name: producer.get(node.input[1]) == "DequantizeLinear" for node in graph.node
                 if node.op_type == "Conv"}
    assert {name for name, q in quantised.items() if not q} == set(craft_onnx.INT8_KEEP_FP32)
    assert sum(quantised.values()) == len(quantised) - len(craft_onnx.INT8_KEEP_FP32) > 15
    assert int8_reader.config["int8_recipe"] == craft_onnx.INT8_RECIPE == 2


def test_the_default_detector_is_int8_on_cpu_and_fp32_on_cuda(tiny_weights):
    assert Settings().ocr_detector == "auto"
    assert OcrReader.config_for(tiny_weights, Settings(device="cpu"))["detector"] == "int8"
    # Only the config: nothing is loaded, so no GPU is needed to see what auto picks there.
    assert OcrReader.config_for(tiny_weights, Settings(device="cuda"))["detector"] == "fp32"


def test_a_model_is_served_with_the_detector_it_was_trained_with(int8_reader, tiny_weights):
    served = OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_detector="fp32"), recorded=int8_reader.config)
    assert served.config["detector"] == "int8" and served.backend == "onnx-int8"
    recorded = {key: value for key, value in int8_reader.config.items()
                if key not in ("detector", "int8_recipe")}  # before int8 existed
    old = OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_detector="int8"), recorded=recorded)
    assert old.config["detector"] == "fp32" and old.backend == "onnx" and "int8_recipe" not in old.config


def test_prepare_detectors_builds_both_craft_runtimes_next_to_the_weights(int8_reader, onnx_reader, tiny_weights):
    from shared.features.ocr import prepare_detectors

    # What an image with baked weights runs once (docker/Dockerfile), so no container builds them at start.
    built = prepare_detectors(tiny_weights, Settings(torch_threads=1))
    assert built == [onnx_reader.reader.detector.path, int8_reader.reader.detector.path]
    assert all(path.is_file() and path.parent == tiny_weights / "easyocr" for path in built)


def test_a_model_trained_on_the_first_int8_recipe_is_refused_naming_both(int8_reader, tiny_weights):
    # Recipe 1 quantised every layer and recorded no recipe: its boxes differ from what this version builds.
    recorded = {key: value for key, value in int8_reader.config.items() if key != "int8_recipe"}
    with pytest.raises(WeightsMismatch, match="recipe 1 .*recipe 2"):
        OcrReader.config_for(tiny_weights, Settings(), recorded)


def test_calibration_scenes_are_the_same_every_time():
    from shared.features import craft_calibration

    first, again = list(craft_calibration.scenes(3)), list(craft_calibration.scenes(3))
    assert [np.asarray(a).tobytes() == np.asarray(b).tobytes() for a, b in zip(first, again)] == [True] * 3
    assert len({a.size for a in first}) == 3 and all(320 <= max(a.size) <= 512 for a in first)


def test_unknown_detector_is_refused():
    with pytest.raises(SettingsError, match="OCR_DETECTOR='fp16': Input should be 'auto', 'int8' or 'fp32'"):
        Settings(ocr_detector="fp16")


def test_unknown_backend_is_refused():
    with pytest.raises(SettingsError, match="OCR_BACKEND='tensorrt': Input should be 'onnx' or 'torch'"):
        Settings(ocr_backend="tensorrt")


def test_downscale_matches_a_full_lanczos_pass():
    photo = Image.open(Settings.from_env().datasets_dir / GROCERY_PHOTO).convert("RGB").resize((2000, 1500))
    fast = np.asarray(downscale(photo, 320), dtype=np.float32)
    full = np.asarray(photo.resize((320, 240), Image.Resampling.LANCZOS), dtype=np.float32)
    assert fast.shape == full.shape and np.abs(fast - full).mean() < 1.0


def test_downscale_keeps_aspect_and_never_upscales():
    assert downscale(Image.new("RGB", (1000, 400)), 100).size == (100, 40)
    assert downscale(Image.new("RGB", (300, 900)), 90).size == (30, 90)
    small = Image.new("RGB", (50, 20))
    assert downscale(small, 100) is small


@pytest.mark.parametrize("raw, expected", [
    ("  Hello,   WORLD!! ", "hello world"),
    ("Молоко 3,2%\tПЯТЁРОЧКА\n", "молоко 3 2 пятёрочка"),
    ("ｆｕｌｌ　ｗｉｄｔｈ ①", "full width 1"),
    ("牛奶 milk ☺★", "milk"),
    ("café  Ÿ", "café ÿ"),
    ("", ""),
    ("___---...", ""),
])
def test_normalise_text(raw, expected):
    assert normalise_text(raw) == expected


def test_config_is_the_contract(reader, tiny_weights):
    config = reader.config
    assert set(config) == {"kind", "langs", "max_side", "max_boxes", "detect_side", "detector", "weights_sha256",
                           "synthetic"}
    assert config["max_boxes"] == Settings().ocr_max_boxes == 32 and config["detector"] == "fp32"
    assert config["detect_side"] == Settings().ocr_detect_side == 512
    assert config["kind"] == "ocr" and config["langs"] == ["en"] and config["max_side"] == MAX_SIDE
    assert config["synthetic"] is False and not reader.synthetic  # the real EasyOCR files
    assert OcrReader.config_for(tiny_weights, Settings(ocr_max_side=MAX_SIDE, ocr_detector="fp32")) == config


def test_a_recorded_config_decides_langs_and_max_side(reader, tiny_weights):
    recorded = {**reader.config, "max_side": 96}
    # Settings that differ from the recorded config: what was recorded at training wins.
    other = Settings(ocr_max_side=2000, ocr_langs="ru,en")
    assert OcrReader.config_for(tiny_weights, other, recorded) == recorded
    again = OcrReader(reader.reader, reader.info, other, reader.backend, recorded)
    assert again.config == recorded and again.max_side == 96


def test_extract_is_read_per_image_and_the_codec_round_trips(reader):
    images = [_text_image(), Image.new("L", (40, 30), 255)]
    texts = reader.extract(images)
    assert texts == [reader.read(image) for image in images]
    assert reader.kind == "ocr" and reader.batchable is False
    assert OcrReader.stack([OcrReader.decode(OcrReader.encode(t)) for t in texts], reader.config) == texts


def test_recogniser_runs_channels_last_with_the_same_outputs(reader):
    model = reader.reader.recognizer
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    crops = torch.rand(2, 1, 64, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(crops, None), plain(crops, None), rtol=1e-4, atol=1e-5)


def test_torch_threads_come_from_settings(reader):
    assert torch.get_num_threads() == 1


def test_md5_bypass_is_undone_after_loading(reader):
    module = importlib.import_module("easyocr.easyocr")
    assert module.calculate_md5 is importlib.import_module("easyocr.utils").calculate_md5


def test_weights_not_marked_synthetic_keep_easyocr_md5_check(synthetic_weights, tmp_path):
    # Same random files, but weights.json claims they are real: EasyOCR's own MD5 check must refuse them.
    folder = tmp_path / "w"
    shutil.copytree(synthetic_weights, folder, copy_function=os.link)
    info = json.loads((folder / "weights.json").read_text())
    info["ocr"]["synthetic"] = False
    (folder / "weights.json").unlink()  # a hard link: never write through it into the session fixture
    (folder / "weights.json").write_text(json.dumps(info))
    with pytest.raises(WeightsMissing, match="MD5 mismatch"):
        OcrReader.load(folder, Settings(torch_threads=1))


def test_missing_weights(tmp_path):
    with pytest.raises(WeightsMissing, match="--synthetic"):
        OcrReader.load(tmp_path, Settings())


def test_languages_the_recogniser_does_not_serve_are_refused_naming_both(tiny_weights):
    # The folder holds english_g2 (en); Russian needs cyrillic_g2: a clear error at load, not another file.
    with pytest.raises(WeightsMismatch, match=r"ru,en were asked for.*\(english_g2\) serves en"):
        OcrReader.load(tiny_weights, Settings(ocr_langs="ru,en"))


def test_largest_boxes_keeps_the_largest_in_their_order():
    horizontal = [[0, 10, 0, 10], [0, 100, 0, 20], [0, 5, 0, 5]]  # areas 100, 2000, 25
    free = [[[0, 0], [40, 0], [40, 30], [0, 30]]]  # area 1200
    assert largest_boxes(horizontal, free, 2) == ([[0, 100, 0, 20]], free)
    assert largest_boxes(horizontal, free, 0) == (horizontal, free)  # 0: no cap
    assert largest_boxes(horizontal, free, 4) == (horizontal, free)


def test_a_page_full_of_text_reads_at_most_max_boxes(tiny_weights):
    from bench.ocr_sizes import text_page

    capped = OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_max_boxes=6))
    found = capped.read_detections(text_page(lines=30))
    assert 0 < len(found) <= 6 and capped.config["max_boxes"] == 6


def test_models_recorded_before_the_cap_read_every_box(reader, tiny_weights):
    old = {key: value for key, value in reader.config.items() if key != "max_boxes"}
    assert OcrReader.config_for(tiny_weights, Settings(), old)["max_boxes"] == 0


def test_models_recorded_before_the_detect_side_show_craft_the_image_as_read(reader, tiny_weights):
    old = {key: value for key, value in reader.config.items() if key != "detect_side"}
    assert OcrReader.config_for(tiny_weights, Settings(), old)["detect_side"] == 0


def test_detect_magnification_enlarges_small_images_only():
    assert detect_magnification(np.zeros((261, 348, 3)), 512) == pytest.approx(512 / 348)
    assert detect_magnification(np.zeros((348, 200, 3)), 512) == pytest.approx(512 / 348)  # the longest side
    assert detect_magnification(np.zeros((480, 640, 3)), 512) == 1.0  # never shrinks
    assert detect_magnification(np.zeros((261, 348, 3)), 0) == 1.0  # 0: off
    assert detect_magnification(np.zeros((0, 0, 3)), 512) == 1.0


def test_craft_sees_the_enlarged_image_and_boxes_come_back_in_the_images_own_pixels(tiny_weights, monkeypatch):
    seen = []
    reader = OcrReader.load(tiny_weights, Settings(torch_threads=1, ocr_detect_side=256, ocr_detector="fp32",
                                                   ocr_backend="torch"))
    detector = reader.reader.detector
    monkeypatch.setattr(reader.reader, "detector", lambda x: seen.append(tuple(x.shape)) or detector(x))
    image = _text_image((160, 48))
    found = reader.read_detections(image)
    # EasyOCR pads CRAFT's input to a multiple of 32: 160 px enlarged to 256 is 256 wide.
    assert seen and seen[-1][-1] == 256
    assert all(0 <= v <= 1.0001 for d in found for v in d["box"])
