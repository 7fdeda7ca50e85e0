"""create_app: SERVICE_NAME picks the member and its routes; every service gets health, metrics and JSON errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from shared import artifacts
from shared.config import Settings
from shared.features import register_extractor, unregister_extractor
from shared.learning.learners import learner_path
from shared.members import MemberSpec, register_member, unregister_member
from shared.serving.app import create_app
from shared.serving.learner import LearnerRuntime
from tests.conftest import image_bytes

REPO = Path(__file__).resolve().parents[2]
DOUBLE = "double_member"
COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220)}


def _rules(app) -> set[str]:
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_unknown_service_name_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="SERVICE_NAME must be one of ocr_nb, clip_svm, clip_logreg, stacking, "
                                         "got 'resnet'"):
        create_app({"SERVICE_NAME": "resnet"})


def test_a_member_name_builds_the_member_runtime_and_routes_only(tmp_path):
    app = create_app({"SERVICE_NAME": "ocr_nb", "MODELS_DIR": tmp_path, "LOAD_IN_BACKGROUND": False})
    assert isinstance(app.extensions["runtime"], LearnerRuntime) and app.extensions["runtime"].name == "ocr_nb"
    assert {"/", "/predict", "/v2/models/<name>", "/v2/health/ready", "/metrics"} <= _rules(app)
    assert not {"/v1/history", "/history", "/ui"} & _rules(app)


def test_the_gateway_name_is_refused_naming_the_gateways_own_factory():
    with pytest.raises(ValueError, match=r"SERVICE_NAME='stacking' is the gateway: build it with its own factory, "
                                         r"shared\.gateway\.app:create_app"):
        create_app({"SERVICE_NAME": "stacking"})


def test_serving_never_imports_the_parts_built_on_it():
    """Every module of shared.serving, and a member's app serving a request, in a fresh interpreter: no module of
    the gateway, the history or the pages is ever imported."""
    code = ("import pkgutil, importlib, sys, shared.serving as s\n"
            "names = [m.name for m in pkgutil.iter_modules(s.__path__, 'shared.serving.')]\n"
            "for name in names: importlib.import_module(name)\n"
            "app = s.app.create_app({'SERVICE_NAME': 'ocr_nb', 'LOAD_IN_BACKGROUND': False})\n"
            "live = app.test_client().get('/v2/health/live').get_json()\n"
            "print(len(names), live['service'], sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['shared', 'gateway'], ['shared', 'history'], ['shared', 'ui'])))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"MODELS_DIR": "/nonexistent", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    count, service, leaked = out.stdout.split(" ", 2)
    assert int(count) >= 10 and service == "ocr_nb" and leaked.strip() == "[]"


def test_config_keeps_its_meaning(tmp_path):
    app = create_app({"SERVICE_NAME": "clip_svm", "MODELS_DIR": tmp_path, "MAX_IMAGE_BYTES": 1234,
                      "LOAD_IN_BACKGROUND": False, "TESTING": True})
    assert app.config["SETTINGS"].models_dir == tmp_path and app.config["MAX_CONTENT_LENGTH"] == 1234
    assert app.config["TESTING"] is True and app.config["LOAD_IN_BACKGROUND"] is False


# --- a fourth member is one table entry: a test-double extractor and learner, served by the real factory ---
class FakeEchoExtractor:
    """Test double of a feature extractor: an image's mean RGB, no weights, no model to load."""

    kind: ClassVar[str] = "echo"
    label: ClassVar[str] = "Echo (test)"  # how /v2/models and the page name its weights part
    batchable: ClassVar[bool] = False
    synthetic = True

    def __init__(self, config: dict):
        self.config = config

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
        return {"kind": cls.kind, "channels": 3, "synthetic": True}

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "FakeEchoExtractor":
        return cls(cls.config_for(weights_dir, settings, recorded))

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([np.asarray(img.convert("RGB"), dtype=float).mean(axis=(0, 1)) / 255 for img in images])


def echo_learner(seed: int = 0) -> Pipeline:
    """Test-double learner builder, named in the double member's table entry."""
    return Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(random_state=seed))])


def train_double(models_dir: Path, spec: MemberSpec) -> None:
    """A models folder holding only the double member, fitted on plain red and blue images."""
    extractor = FakeEchoExtractor.load(models_dir, Settings())
    labels = sorted(COLOURS)
    images = [Image.new("RGB", (8, 8), COLOURS[label]) for label in labels for _ in range(3)]
    pipeline = spec.build_learner(seed=0).fit(extractor.extract(images), np.repeat(np.arange(len(labels)), 3))
    artifacts.save_object(pipeline, models_dir, learner_path(spec.name))
    artifacts.write_manifest(models_dir, {"classes": labels, "members": [spec.name], "synthetic_weights": True,
                                          "features": {"echo": extractor.config},
                                          "files": {learner_path(spec.name): ""}})


@pytest.fixture
def double_member(tmp_path: Path) -> Iterator[MemberSpec]:
    """The double registered in the member and extractor tables for this test only."""
    register_extractor(FakeEchoExtractor)
    spec = register_member(MemberSpec(DOUBLE, 5099, "127.0.0.1", extractor="echo",
                                      learner=f"{__name__}:echo_learner"))
    try:
        yield spec
    finally:
        unregister_member(DOUBLE)
        unregister_extractor("echo")


def test_a_registered_fourth_member_is_served_by_the_same_factory(double_member: MemberSpec, tmp_path: Path):
    train_double(tmp_path / "models", double_member)
    app = create_app({"SERVICE_NAME": DOUBLE, "MODELS_DIR": tmp_path / "models", "WEIGHTS_DIR": tmp_path,
                      "LOAD_IN_BACKGROUND": False})
    client = app.test_client()
    assert client.get("/v2/health/ready").get_json()["ready"] is True
    body = client.post("/", data=image_bytes("PNG", color=COLOURS["red"])).get_json()
    assert (body["model"], body["label"], body["synthetic_weights"]) == (DOUBLE, "red", True)
    assert set(body["probas"]) == {"red", "blue"}
    meta = client.get(f"/v2/models/{DOUBLE}").get_json()["parameters"]
    assert meta["feature"]["kind"] == "echo" and meta["ready"] is True
    assert meta["weights"] == {"echo": "synthetic"} and meta["part_labels"] == {"echo": "Echo (test)"}
