"""FeatureCache: values by (config hash, image sha256), encoded by each extractor's codec; WAL for concurrent use."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np

from shared.features.cache import FeatureCache, config_hash


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


def test_an_empty_text_stays_an_empty_text(tmp_path):
    # Synthetic OCR reads "" for most images: it is a value, not a missing one.
    cache = FeatureCache(tmp_path / "f.sqlite3")
    cache.put_many(OCR_CFG, {"a": ""})
    assert cache.get_many(OCR_CFG, ["a"]) == {"a": ""}


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
