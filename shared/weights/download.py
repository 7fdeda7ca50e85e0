"""Real weights from their origin hosts (or WEIGHTS_MIRROR), verified against upstream checksums."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from shared.artifacts import sha256_file as file_sha256
from shared.config import Settings
from shared.errors import WeightsDownloadFailed
from shared.weights.catalog import DETECTOR, clip_section, clip_source, detector_entry, pick_recogniser
from shared.weights.provenance import info_from_parts
from shared.weights.store import CLIP_DIR, DEFAULT_OCR_LANGS, OCR_DIR, atomic_torch_save, weight_parts, write_info

log = logging.getLogger(__name__)


def fetch_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> Path:
    """Download every part's real weights (CLIP, EasyOCR), verify checksums, write weights.json (synthetic: false)."""
    from shared.features.registry import extractor_class  # each extractor fetches its own part

    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        parts = {kind: extractor_class(kind).fetch_weights(out, settings, timeout_s) for kind in weight_parts()}
    except BaseException:
        if created:
            _remove_empty_folders(out)
        raise
    write_info(out, info_from_parts(parts))
    return out


def _remove_empty_folders(root: Path) -> None:
    """Undo the folders a failed download made; a folder holding any file stays."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


def _mirrored(url: str, settings: Settings) -> str:
    if not settings.weights_mirror:
        return url
    return f"{settings.weights_mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}"


def fetch_clip_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> dict:
    """Download and verify the configured CLIP weights into out/clip; returns their weights.json section."""
    url, expected = clip_source(settings)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        raw = Path(tmp) / url.rsplit("/", 1)[-1]
        download(_mirrored(url, settings), raw, timeout_s)
        actual = file_sha256(raw)
        if not actual.startswith(expected):
            raise WeightsDownloadFailed(_checksum_message(url, "sha256", expected, actual))
        return store_clip_checkpoint(raw, out, settings)


def store_clip_checkpoint(path: Path, out: Path, settings: Settings) -> dict:
    """Keep a verified upstream CLIP checkpoint as a plain state_dict in out/clip; returns its section."""
    relpath = f"{CLIP_DIR}/{settings.clip_model}-{settings.clip_pretrained}.bin"
    atomic_torch_save(_clip_state_dict(path), out / relpath)
    return clip_section(settings.clip_model, settings.clip_pretrained, relpath, out, settings, synthetic=False)


def _clip_state_dict(path: Path) -> dict:
    import torch

    # OpenAI ships a TorchScript archive; the weights folder keeps a plain state_dict for open_clip.
    try:
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def fetch_ocr_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> dict:
    """Download and verify EasyOCR's detector and recogniser into out/easyocr; returns their section."""
    folder = out / OCR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    langs = settings.ocr_lang_list() or list(DEFAULT_OCR_LANGS)
    choice = pick_recogniser(langs, folder)
    files = {}
    for entry in (detector_entry(), choice):
        _fetch_easyocr_file(entry, folder, settings, timeout_s)
        files[entry["filename"]] = file_sha256(folder / entry["filename"])
    return {"langs": langs, "detector": DETECTOR, "recognizer": choice["name"], "files": files, "synthetic": False}


def _fetch_easyocr_file(entry: dict, folder: Path, settings: Settings, timeout_s: float) -> None:
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        archive = Path(tmp) / entry["url"].rsplit("/", 1)[-1]
        download(_mirrored(entry["url"], settings), archive, timeout_s)
        member = _unzip_member(archive, entry["filename"], Path(tmp))
        actual = hashlib.md5(member.read_bytes()).hexdigest()
        if actual != entry["md5sum"]:
            raise WeightsDownloadFailed(_checksum_message(entry["url"], "md5", entry["md5sum"], actual))
        os.replace(member, folder / entry["filename"])


def _unzip_member(archive: Path, name: str, into: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extract(name, into)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsDownloadFailed(
            f"{archive.name} is not the expected zip with {name} ({exc}); the download is damaged. "
            f"Retry, or offline use `python -m shared weights --synthetic`."
        ) from None
    return into / name


def _checksum_message(url: str, algo: str, expected: str, actual: str) -> str:
    return (f"Checksum mismatch for {url}: {algo} is {actual}, expected {expected}. The file was not kept. "
            f"Retry, or offline use `python -m shared weights --synthetic`.")


def download(url: str, dest: Path, timeout_s: float) -> Path:
    """Stream url into dest with a tqdm bar; WeightsDownloadFailed says why it could not."""
    from tqdm import tqdm

    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(dest, "wb") as fh:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadFailed(
            f"Could not download {url}: the server answered HTTP {exc.code} {exc.reason}. "
            f"Check WEIGHTS_MIRROR, or offline use `python -m shared weights --synthetic`."
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsDownloadFailed(
            f"Could not download {url}: host unreachable or request failed ({reason}). "
            f"Check the network or set WEIGHTS_MIRROR, or offline use `python -m shared weights --synthetic`."
        ) from None
    return dest
