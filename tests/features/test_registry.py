"""The extractor registry: names to classes, imported lazily; a registered extractor is used by extract_features."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from shared.config import Settings
from shared.errors import ArtifactError
from shared.features import registry
from shared.features.cache import FeatureCache, VectorCodec
from shared.features.extract import extract_features


class MeanColourExtractorDouble(VectorCodec):
    """Test double for a feature extractor: an image's value is its mean RGB colour; needs no weights files."""

    kind = "mean_colour_double"
    batchable = True
    loads = 0

    def __init__(self, config: dict):
        self.config = config
        self.synthetic = True

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
        return {"kind": cls.kind, "version": 1, "synthetic": True}

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "MeanColourExtractorDouble":
        cls.loads += 1
        return cls(cls.config_for(weights_dir, settings, recorded))

    @staticmethod
    def weight_files(info: dict) -> dict[str, str]:
        return {}

    @staticmethod
    def stack(values: Sequence[np.ndarray], config: dict) -> np.ndarray:
        return np.stack(list(values)) if len(values) else np.zeros((0, 3), dtype=np.float32)

    @staticmethod
    def describe(config: dict) -> str:
        return "mean colour"

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([np.asarray(img, dtype=np.float32).mean(axis=(0, 1)) for img in images])


@pytest.fixture
def double() -> Iterator[type[MeanColourExtractorDouble]]:
    """The test double, registered for one test."""
    registry.register_extractor(MeanColourExtractorDouble)
    MeanColourExtractorDouble.loads = 0
    yield MeanColourExtractorDouble
    registry.unregister_extractor(MeanColourExtractorDouble.kind)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown feature extractor kind 'sift'; known kinds: clip, ocr"):
        registry.extractor_class("sift")


def test_built_in_extractors_are_imported_only_when_asked_for() -> None:
    code = ("import sys, shared.features as f; assert 'shared.features.clip' not in sys.modules; "
            "assert f.extractor_class('clip').__name__ == 'ClipEmbedder'; "
            "assert 'shared.features.clip' in sys.modules and 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_lazy_entry_resolves_to_its_class() -> None:
    registry.register_extractor(f"{__name__}:MeanColourExtractorDouble", kind="lazy_double")
    try:
        assert registry.extractor_class("lazy_double") is MeanColourExtractorDouble
        assert "lazy_double" in registry.extractor_kinds()
    finally:
        registry.unregister_extractor("lazy_double")


def test_a_kind_is_registered_once(double) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register_extractor(double)


def test_extract_features_uses_a_registered_extractor(double, feature_settings, make_image_files, tmp_path) -> None:
    paths = make_image_files(3)
    cache = FeatureCache.default(feature_settings)
    first = extract_features(paths, feature_settings, tmp_path, kinds=(double.kind,), cache=cache, progress=False)
    second = extract_features(paths, feature_settings, tmp_path, kinds=(double.kind,), cache=cache, progress=False)
    assert first.values[double.kind].shape == (3, 3) and first.config[double.kind]["kind"] == double.kind
    assert first.stats[double.kind] == {"hits": 0, "misses": 3} and second.stats[double.kind]["hits"] == 3
    np.testing.assert_array_equal(first.values[double.kind], second.values[double.kind])
    assert double.loads == 1  # the cached run loaded nothing


def test_load_extractor_checks_the_recorded_config_before_loading(double, tmp_path) -> None:
    recorded = {**double.config_for(tmp_path, Settings()), "version": 2}
    with pytest.raises(ArtifactError, match="version is 1 there, the model was trained with 2"):
        registry.load_extractor(double.kind, tmp_path, Settings(), recorded)
    assert double.loads == 0
    assert registry.load_extractor(double.kind, tmp_path, Settings(), {**recorded, "version": 1}).batchable


def test_check_feature_config_ignores_only_the_synthetic_flag(tmp_path) -> None:
    recorded = {"kind": "x", "weights_sha256": "a", "synthetic": True}
    registry.check_feature_config(recorded, {**recorded, "synthetic": False}, tmp_path)
    with pytest.raises(ArtifactError, match="weights_sha256 is 'b' there"):
        registry.check_feature_config(recorded, {**recorded, "weights_sha256": "b"}, tmp_path)
