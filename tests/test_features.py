"""extract_features + FeatureCache: cache hits on a second run, unreadable files listed, not fatal."""
from __future__ import annotations

import io
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from shared.features.extract import FeatureCache, config_hash, extract_features


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
    np.testing.assert_array_equal(first.clip, second.clip)
    assert first.text == second.text and first.hashes == second.hashes and first.rows == [0, 1, 2, 3, 4]
    assert first.clip.shape == (5, 32) and first.clip.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first.clip, axis=1), 1.0, atol=1e-5)
    assert len(first.text) == 5 and all(isinstance(t, str) for t in first.text)
    assert first.config["clip"]["kind"] == "clip" and first.config["ocr"]["kind"] == "ocr"
    assert first.config["clip"]["synthetic"] and first.config["ocr"]["synthetic"]
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
    assert table.clip.shape == (2, 32)


def test_unreadable_files_are_listed_not_fatal(tiny_weights, feature_settings, make_image_files, tmp_path):
    good = make_image_files(2)
    (tmp_path / "notes.jpg").write_bytes(b"just some text, not an image")
    (tmp_path / "cut.jpg").write_bytes(_truncated_jpeg())
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [good[0], tmp_path / "notes.jpg", tmp_path / "cut.jpg", tmp_path / "gone.png",
             tmp_path / "empty.png", good[1]]
    table = extract_features(paths, feature_settings, tiny_weights, kinds=("clip",), progress=False)
    assert table.rows == [0, 5] and table.clip.shape == (2, 32)
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
    assert table.text is None and table.rows == [0, 1]
    np.testing.assert_array_equal(table.clip[0], table.clip[1])


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


# --- the cache itself ---------------------------------------------------------------------------------
CLIP_CFG = {"kind": "clip", "model": "m", "pretrained": "p", "weights_sha256": "x", "synthetic": True, "dim": 3}
OCR_CFG = {"kind": "ocr", "langs": ["ru"], "max_side": 640, "weights_sha256": "y", "synthetic": True}


def test_cache_round_trip_and_wal(tmp_path):
    cache = FeatureCache(tmp_path / "f.sqlite3")
    cache.put_many(CLIP_CFG, {"a": np.array([1, 2, 3], dtype=np.float32)})
    cache.put_many(OCR_CFG, {"a": "молоко"})
    assert cache.get_many(CLIP_CFG, ["a", "b"])["a"].tolist() == [1.0, 2.0, 3.0]
    assert cache.get_many(OCR_CFG, ["a"]) == {"a": "молоко"}
    assert cache.get_many({**OCR_CFG, "max_side": 320}, ["a"]) == {}
    with sqlite3.connect(tmp_path / "f.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def test_cache_readers_run_while_a_writer_writes(tmp_path):
    path = tmp_path / "f.sqlite3"
    FeatureCache(path).put_many(OCR_CFG, {f"h{i}": "x" for i in range(50)})
    problems: list[Exception] = []

    def read() -> None:
        try:
            for _ in range(20):
                assert len(FeatureCache(path).get_many(OCR_CFG, [f"h{i}" for i in range(50)])) == 50
        except Exception as exc:  # collected: a thread's failure must fail the test
            problems.append(exc)

    def write() -> None:
        try:
            for n in range(20):
                FeatureCache(path).put_many(OCR_CFG, {f"w{n}-{i}": "y" for i in range(20)})
        except Exception as exc:
            problems.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == [] and FeatureCache(path).count() == 50 + 20 * 20


def test_feature_modules_import_without_torch():
    code = "import sys, shared.features.extract, shared.weights, shared.images; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
