"""One batch of a bulk job without Ray: real extractors (real OCR, tiny synthetic CLIP), learners and stack."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from shared.bulk.inputs import read_inputs
from shared.bulk.work import ClassifyWork
from shared.config import Settings
from shared.features.cache import CACHE_FILE, FeatureCache
from shared.learning.data import load_dataset
from shared.learning.predict import predict_files


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims width x height pixels (the pixel check refuses it before any decoding)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_bad_photos(folder: Path) -> dict[str, str]:
    """{path: the error it must get}: missing, not an image, truncated, 60 MB, a pixel bomb."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "text.jpg").write_text("not a photo")
    good = load_dataset(Path(Settings.from_env().datasets_dir) / "screenshots").paths[0].read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    with open(folder / "huge.jpg", "wb") as fh:  # sparse: 60 MB on paper, nothing on disk
        fh.truncate(60 * 1024 * 1024)
    (folder / "bomb.png").write_bytes(bomb_png())
    return {str(folder / "missing.png"): "No such file", str(folder / "text.jpg"): "not a supported image",
            str(folder / "truncated.png"): "could not be", str(folder / "huge.jpg"): "the limit is",
            str(folder / "bomb.png"): "pixels; the limit is"}


@pytest.fixture(scope="module")
def work(trained_models: Path, tiny_weights: Path, trained_settings: Settings) -> ClassifyWork:
    return ClassifyWork(trained_models, tiny_weights, trained_settings, cache_path=None)


def test_a_batch_answers_as_predict_and_every_bad_photo_gets_its_row(
        work: ClassifyWork, trained_models: Path, tiny_weights: Path, trained_settings: Settings,
        tmp_path: Path) -> None:
    good = [str(p) for p in load_dataset(trained_models.parent / "screenshots30.csv").paths[:4]]
    bad = write_bad_photos(tmp_path / "bad")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join([good[0], *bad, *good[1:]]) + "\nx.png,extra\n")
    out = work(read_inputs(listing)).to_pylist()
    assert [r["row"] for r in out] == list(range(len(good) + len(bad) + 1))
    errors = {r["path"]: r["error"] for r in out if r["error"]}
    assert set(errors) == {*bad, "x.png,extra"}
    for path, expected in bad.items():
        assert expected in errors[path], (path, errors[path])
        assert next(r for r in out if r["path"] == path)["proba_stack"] is None
    expected = {r["path"]: r for r in predict_files(trained_models, tiny_weights, [Path(p) for p in good],
                                                    trained_settings)}
    for row in (r for r in out if not r["error"]):
        want = expected[row["path"]]
        assert row["class_id"] == want["class_id"] and row["class_label"] == want["label"]
        assert row["proba_stack"] == pytest.approx(list(want["probas"].values()), abs=1e-6)
        for member, probas in want["members"].items():
            assert row[f"proba_{member}"] == pytest.approx(list(probas.values()), abs=1e-6)
        assert row["model_version"] == want["model_version"] and json.loads(row["weights"]) == want["weights"]
        assert row["synthetic_weights"] is True and len(row["sha256"]) == 64


def test_features_come_from_the_cache_when_one_is_given(
        trained_models: Path, tiny_weights: Path, trained_settings: Settings, tmp_path: Path) -> None:
    """The second pass over the same photos computes nothing: the extractors are not even asked."""
    work = ClassifyWork(trained_models, tiny_weights, trained_settings, cache_path=tmp_path / CACHE_FILE)
    paths = [str(p) for p in load_dataset(trained_models.parent / "screenshots30.csv").paths[:3]]
    batch = pa.table({"row": [0, 1, 2], "path": paths, "label": [None] * 3, "error": [None] * 3})
    first = work(batch)
    assert FeatureCache(tmp_path / CACHE_FILE).count() == 3 * len(work.features.extractors)
    work.features.extractors = {kind: None for kind in work.features.extractors}  # any extract() call now fails
    second = work(batch)
    assert second.column("error").null_count == 3
    assert np.allclose(second.column("proba_stack").to_pylist(), first.column("proba_stack").to_pylist())
