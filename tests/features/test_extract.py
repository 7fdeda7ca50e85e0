"""extract_features: cache hits on a second run, unreadable files listed, not fatal; recorded configs checked."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from shared.errors import ArtifactError
from shared.features.cache import FeatureCache
from shared.features.extract import extract_features


def _truncated_jpeg() -> bytes:
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=90)
    return buf.getvalue()[: int(len(buf.getvalue()) * 0.6)]  # header intact, scan data cut


def test_second_run_recomputes_nothing(tiny_weights, feature_settings, make_image_files):
    paths = make_image_files(5)
    cache = FeatureCache.default(feature_settings)
    first = extract_features(paths, feature_settings, tiny_weights, cache=cache, progress=False)
    second = extract_features(paths, feature_settings, tiny_weights, cache=cache, progress=False)
    assert first.stats["clip"] == {"hits": 0, "misses": 5} and first.stats["ocr"] == {"hits": 0, "misses": 5}
    assert second.stats["clip"] == {"hits": 5, "misses": 0} and second.stats["ocr"] == {"hits": 5, "misses": 0}
    clip, texts = first.values["clip"], first.values["ocr"]
    np.testing.assert_array_equal(clip, second.values["clip"])
    assert texts == second.values["ocr"] and first.hashes == second.hashes and first.rows == [0, 1, 2, 3, 4]
    assert clip.shape == (5, 32) and clip.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(clip, axis=1), 1.0, atol=1e-5)
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)
    assert first.config["clip"]["kind"] == "clip" and first.config["ocr"]["kind"] == "ocr"
    assert first.config["clip"]["synthetic"] and not first.config["ocr"]["synthetic"]  # real OCR, tiny CLIP
    assert first.errors == {} and "seconds" in first.stats


def test_cached_run_does_not_load_models(tiny_weights, feature_settings, make_image_files, tmp_path):
    paths = make_image_files(2)
    extract_features(paths, feature_settings, tiny_weights, progress=False)
    # Same weights.json, but no model files at all: only a run that loads nothing can succeed.
    bare = tmp_path / "bare-weights"
    bare.mkdir()
    shutil.copy(tiny_weights / "weights.json", bare / "weights.json")
    table = extract_features(paths, feature_settings, bare, progress=False)
    assert table.stats["clip"]["misses"] == 0 and table.stats["ocr"]["misses"] == 0
    assert table.values["clip"].shape == (2, 32)


def test_unreadable_files_are_listed_not_fatal(tiny_weights, feature_settings, make_image_files, tmp_path):
    good = make_image_files(2)
    (tmp_path / "notes.jpg").write_bytes(b"just some text, not an image")
    (tmp_path / "cut.jpg").write_bytes(_truncated_jpeg())
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good[0], tmp_path / "notes.jpg", tmp_path / "cut.jpg", tmp_path / "gone.png",
             tmp_path / "empty.png", good[1]]
    table = extract_features(paths, feature_settings, tiny_weights, kinds=("clip",), progress=False)
    assert table.rows == [0, 5] and table.values["clip"].shape == (2, 32)
    assert sorted(table.errors) == [1, 2, 3, 4]
    assert "not a supported image" in table.errors[1]
    assert "truncated or corrupt" in table.errors[2]
    assert "No such file" in table.errors[3]
    assert "empty" in table.errors[4]


def test_duplicate_images_are_computed_once(tiny_weights, feature_settings, make_image_files, tmp_path):
    (path,) = make_image_files(1)
    copy = tmp_path / "copy.png"
    shutil.copy(path, copy)
    table = extract_features([path, copy], feature_settings, tiny_weights, kinds=("clip",), progress=False)
    assert table.stats["clip"] == {"hits": 0, "misses": 1}
    assert set(table.values) == {"clip"} and table.rows == [0, 1]
    np.testing.assert_array_equal(table.values["clip"][0], table.values["clip"][1])


def test_a_changed_ocr_setting_misses_only_ocr(tiny_weights, feature_settings, make_image_files):
    paths = make_image_files(2)
    extract_features(paths, feature_settings, tiny_weights, progress=False)
    changed = feature_settings.replace(ocr_max_side=feature_settings.ocr_max_side // 2)
    table = extract_features(paths, changed, tiny_weights, progress=False)
    assert table.stats["clip"] == {"hits": 2, "misses": 0}
    assert table.stats["ocr"] == {"hits": 0, "misses": 2}


def test_unknown_kind_is_refused(tiny_weights, feature_settings):
    with pytest.raises(ValueError, match="kinds"):
        extract_features([], feature_settings, tiny_weights, kinds=("sift",), progress=False)


def test_a_recorded_config_is_reproduced_and_other_weights_refused(tiny_weights, feature_settings, make_image_files):
    paths = make_image_files(2)
    first = extract_features(paths, feature_settings, tiny_weights, progress=False)
    # Other OCR settings now, but the recorded config decides: every feature comes from the cache.
    changed = feature_settings.replace(ocr_max_side=feature_settings.ocr_max_side // 2)
    again = extract_features(paths, changed, tiny_weights, progress=False, recorded=first.config)
    assert again.config == first.config and again.stats["ocr"] == {"hits": 2, "misses": 0}
    other = {**first.config["clip"], "weights_sha256": "0" * 64}
    with pytest.raises(ArtifactError, match="weights_sha256"):
        extract_features(paths, feature_settings, tiny_weights, kinds=("clip",), recorded={"clip": other},
                         progress=False)


def test_feature_modules_import_without_torch():
    code = ("import sys, shared.features, shared.features.extract, shared.features.cache, shared.weights, "
            "shared.images; shared.features.extractor_class('clip'); shared.features.extractor_class('ocr'); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
