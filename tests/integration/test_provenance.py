"""Per-part provenance end to end (real gunicorns): a real grocery photo with printed text through the gateway.

The stack runs on tiny_weights, REAL EasyOCR and SYNTHETIC CLIP: every answer names exactly those parts.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from shared.config import Settings
from shared.members import member_names

JUICE = Path("grocery/val/Packages/Juice/God-Morgon-Orange-Juice/God-Morgon-Orange-Juice_001.jpg")


@pytest.fixture(scope="module")
def juice_photo() -> bytes:
    path = Path(Settings.from_env().datasets_dir) / JUICE
    if not path.is_file():
        pytest.skip(f"no grocery photo at {path}")
    return path.read_bytes()


def test_gateway_names_real_ocr_and_synthetic_clip_for_a_real_photo(stack, juice_photo):
    resp = requests.post(stack.gateway_url + "/", data=juice_photo, timeout=120)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["members"]) == set(member_names()) and all(m["ok"] for m in body["members"].values())
    assert body["weights"] == {"ocr": "real", "clip": "synthetic"} and body["synthetic_weights"] is True
    assert body["members"]["ocr_nb"]["weights"] == {"ocr": "real"}
    assert body["members"]["clip_svm"]["weights"] == {"clip": "synthetic"}


def test_ocr_member_says_real_ocr_and_nothing_synthetic(stack, juice_photo):
    body = requests.post(stack.urls["ocr_nb"] + "/", data=juice_photo, timeout=120).json()
    assert body["weights"] == {"ocr": "real"} and "synthetic_weights" not in body
    resp = requests.get(stack.urls["ocr_nb"] + "/v2/models/ocr_nb", timeout=10).json()
    meta = resp.get("parameters", resp)  # the inference protocol keeps our metadata under parameters
    assert meta["weights"] == {"ocr": "real"} and meta["synthetic"] is False
    assert meta["feature"]["synthetic"] is False
