"""Per-part provenance in-process: each answer and /v2/models/<name> name exactly the weights behind them.

tiny_weights is REAL EasyOCR + a tiny SYNTHETIC CLIP: ocr_nb is real throughout, the CLIP members are synthetic,
and the gateway names the parts of the members whose answers it combined.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.config import Settings
from shared.gateway.client import MemberAnswer, Outcome
from shared.gateway.routes import _member_weights
from shared.gateway.runtime import GatewayRuntime
from shared.serving.app import create_app
from tests.conftest import image_bytes

EXPECTED = {"ocr_nb": {"ocr": "real"}, "clip_svm": {"clip": "synthetic"}}


def _client(name: str, models: Path, weights: Path, settings: Settings):
    app = create_app({"SETTINGS": settings.replace(models_dir=models, weights_dir=weights), "SERVICE_NAME": name,
                      "LOAD_IN_BACKGROUND": False})
    return app.test_client()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_member_answer_and_metadata_name_only_its_own_part(name: str, trained_models: Path, tiny_weights: Path,
                                                           trained_settings: Settings, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="shared.serving.runtime"):
        client = _client(name, trained_models, tiny_weights, trained_settings)
    note = "weights: ocr real" if name == "ocr_nb" else "weights: clip SYNTHETIC (random init: not CLIP's accuracy)"
    assert f"{name} ready (model_version " in caplog.text and f"; {note})" in caplog.text
    body = client.post("/", data=image_bytes("JPEG", (64, 48))).get_json()
    assert body["weights"] == EXPECTED[name]
    if name == "ocr_nb":
        assert "synthetic_weights" not in body  # real OCR: nothing synthetic behind this answer
    else:
        assert body["synthetic_weights"] is True
    resp = client.get(f"/v2/models/{name}").get_json()
    meta = resp.get("parameters", resp)  # the inference protocol keeps our metadata under parameters
    assert meta["weights"] == EXPECTED[name] and meta["synthetic"] is (name != "ocr_nb")


def test_gateway_takes_each_members_own_parts_else_the_manifests(trained_models: Path,
                                                                trained_settings: Settings) -> None:
    runtime = GatewayRuntime(trained_settings.replace(models_dir=trained_models))
    runtime.start(background=False)
    assert runtime.weights == {"ocr": "real", "clip": "synthetic"} and runtime.synthetic is True
    meta = runtime.metadata()
    assert meta["weights"] == {"ocr": "real", "clip": "synthetic"} and meta["synthetic"] is True
    said = MemberAnswer("ocr_nb", Outcome.OK, 1.0, 200, {"probas": {}, "weights": {"ocr": "real"}})
    silent = MemberAnswer("clip_svm", Outcome.OK, 1.0, 200, {"probas": {}})  # an older member: no "weights"
    assert _member_weights(runtime, "ocr_nb", said) == {"ocr": "real"}
    assert _member_weights(runtime, "clip_svm", silent) == {"clip": "synthetic"}
