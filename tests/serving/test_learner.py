"""A member service in-process (the factory + Flask test client): input checks, errors as JSON, readiness flags.

No trained model here: these paths must answer correctly before (or without) one; the predicting paths
run against real gunicorns in tests/integration/test_members.py.
"""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from shared.config import Settings
from shared.serving import learner
from shared.serving.app import create_app

REPO = Path(__file__).resolve().parents[2]


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (tiny file, huge image): a decompression-bomb probe."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def jpeg(size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def client(tmp_path: Path):
    """A clip_svm member whose models folder is empty: it never becomes ready."""
    settings = Settings(models_dir=tmp_path / "no-models", weights_dir=tmp_path / "no-weights",
                        max_image_bytes=50_000, max_image_pixels=1_000_000)
    app = create_app({"SETTINGS": settings, "SERVICE_NAME": "clip_svm", "LOAD_IN_BACKGROUND": False})
    return app.test_client()


def test_live_at_once_ready_never_without_models(client):
    assert client.get("/v2/health/live").status_code == 200
    resp = client.get("/v2/health/ready")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["ready"] is False and body["loaded"] is False
    assert "manifest.json" in body["error"]  # the load failure says what is missing


def test_valid_image_before_the_model_is_loaded_is_503(client):
    resp = client.post("/", data=jpeg())
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "not_ready"


@pytest.mark.parametrize("body, status, code", [
    (b"", 400, "empty_body"),
    (b"just some text, not an image", 415, "unsupported_media_type"),
    (jpeg()[:200], 400, "corrupt_image"),
    (png_header_claiming(30000, 30000), 413, "image_too_large"),
])
def test_bad_input_is_a_4xx_json_error(client, body, status, code):
    resp = client.post("/predict", data=body, content_type="image/jpeg")
    assert resp.status_code == status
    assert resp.get_json()["error"]["code"] == code
    assert resp.get_json()["error"]["message"]


def test_body_over_the_limit_is_413_json(client):
    resp = client.post("/", data=b"\xff" * 60_000, content_type="application/octet-stream")
    assert resp.status_code == 413
    error = resp.get_json()["error"]
    assert error["code"] == "payload_too_large" and "50000" in error["message"]


def test_multipart_needs_a_file_field(client):
    resp = client.post("/", data={"image": (io.BytesIO(jpeg()), "a.jpg")}, content_type="multipart/form-data")
    assert resp.status_code == 400
    assert "'file'" in resp.get_json()["error"]["message"]


def test_urlencoded_content_type_still_means_raw_bytes(client):
    # curl --data-binary sends application/x-www-form-urlencoded; the bytes must not become form fields
    resp = client.post("/", data=b"", content_type="application/x-www-form-urlencoded")
    assert resp.get_json()["error"]["code"] == "empty_body"


def test_unknown_route_and_model_are_json_404(client):
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"
    resp = client.get("/v2/models/clip_logreg")
    assert resp.status_code == 404 and "clip_svm" in resp.get_json()["error"]  # the inference protocol's error


def test_request_id_is_echoed_or_generated(client):
    assert client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/v2/health/live").headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_unexpected_exception_is_a_logged_json_500(client, caplog):
    def broken(image, slack_s=0.0, version=None):
        raise RuntimeError("boom")

    runtime = client.application.extensions["runtime"]
    runtime.model = type("LoadedDouble", (), {"classes": ["a"], "model_version": "x", "synthetic": False})()
    runtime.predict = broken  # test double: a loaded member whose inference crashes
    resp = client.post("/", data=jpeg())
    assert resp.status_code == 500
    assert resp.get_json()["error"]["code"] == "internal_error"
    assert "RuntimeError" in resp.get_json()["error"]["message"]
    assert "unexpected error" in caplog.text


def test_metrics_endpoint_counts_requests(client):
    client.get("/v2/health/live")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'classifier_requests_total{endpoint="observability.live",method="GET",service="clip_svm",status="200"}' in text
    assert "classifier_request_duration_seconds_bucket" in text
    assert "classifier_requests_in_flight" in text


def test_warmup_image_is_rgb():
    assert learner.warmup_image().mode == "RGB"


def test_wrong_method_is_json_405_with_allow(client):
    resp = client.get("/predict")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_chunked_body_over_the_limit_is_413(client):
    # no Content-Length; the server (like gunicorn for chunked bodies) marks the stream as terminated
    resp = client.post("/", input_stream=io.BytesIO(b"\xff" * 80_000), environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "payload_too_large"


def test_release_freed_memory_returns_freed_heap_to_the_os():
    # In a fresh interpreter: free every other 100 KB block (holes glibc keeps mapped), then release.
    script = """
import sys
from shared.serving.learner import release_freed_memory
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [bytearray(100_000) for _ in range(4000)]
for b in blocks:
    b[::4096] = b"x" * len(b[::4096])  # touch every page
del blocks[::2]
before = rss_mib()
release_freed_memory()
print(before - rss_mib())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert float(out.stdout) > 100, f"only {out.stdout.strip()} MiB of ~190 freed MiB went back"


@pytest.mark.parametrize("header", ["soon", "-5", "nan", "inf"])
def test_malformed_batch_slack_is_a_400(client, header):
    resp = client.post("/", data=jpeg(), headers={"X-Batch-Slack-Ms": header})
    assert resp.status_code == 400
    assert "X-Batch-Slack-Ms must be a number of milliseconds" in resp.get_json()["error"]["message"]


def test_batch_slack_is_capped_by_the_members_setting():
    assert learner.batch_slack_s(None, 2000) == 0.0
    assert learner.batch_slack_s("250", 2000) == 0.25
    assert learner.batch_slack_s("99999", 2000) == 2.0
    assert learner.batch_slack_s("500", 0) == 0.0
