"""The weights folder: weights.json, the files' checksums, atomic writes."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from shared.artifacts import sha256_file as file_sha256
from shared.errors import ClassifierError, WeightsMissing

CLIP_DIR, OCR_DIR = "clip", "easyocr"
INFO_FILE = "weights.json"
# What synthetic and downloaded OCR weights serve when OCR_LANGS is empty: the marketplace's Russian and English.
DEFAULT_OCR_LANGS = ("ru", "en")
FETCH_HINT = "Run `python -m shared weights` to download them, or offline `python -m shared weights --synthetic`."


def weight_parts() -> tuple[str, ...]:
    """The parts a weights folder holds: one per registered feature extractor kind ("clip", "ocr")."""
    from shared.features.registry import extractor_kinds  # the extractors read weights/: import on use

    return extractor_kinds()


def read_weights_info(weights_dir: Path) -> dict:
    """weights.json of a weights folder; WeightsMissing if absent or unreadable."""
    path = Path(weights_dir) / INFO_FILE
    if not path.is_file():
        raise WeightsMissing(f"No weights in {weights_dir} ({INFO_FILE} not found). {FETCH_HINT}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsMissing(f"{path} could not be read ({exc}). {FETCH_HINT}") from None


def read_section(weights_dir: Path, kind: str) -> dict:
    """The weights.json section for kind ("clip" or "ocr"), files unchecked; WeightsMissing if absent."""
    info = read_weights_info(weights_dir).get(kind)
    if not info:
        raise WeightsMissing(f"{weights_dir}/{INFO_FILE} has no {kind!r} weights. {FETCH_HINT}")
    return info


def require_weights(weights_dir: Path, kind: str) -> dict:
    """The weights.json section for kind ("clip" or "ocr"), after checking every file's sha256."""
    info = read_section(weights_dir, kind)
    for relpath, expected in weight_files(info, kind).items():
        _verify_file(Path(weights_dir) / relpath, expected)
    return info


def weight_files(info: dict, kind: str) -> dict[str, str]:
    """{path relative to the weights folder: sha256} for one section of weights.json."""
    # The section's layout is the extractor's own: its class lists the files (imported lazily, both ways round).
    from shared.features.registry import extractor_class

    return extractor_class(kind).weight_files(info)


def ocr_weights_sha256(info: dict) -> str:
    """One hash standing for all OCR files (detector + recogniser)."""
    lines = "\n".join(f"{name}:{sha}" for name, sha in sorted(info["files"].items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _verify_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise WeightsMissing(f"Weight file {path} is missing. {FETCH_HINT}")
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsMissing(
            f"Weight file {path} has sha256 {actual}, but weights.json expects {expected}: "
            f"it was changed or damaged. {FETCH_HINT}"
        )


def refuse_to_replace_real(out: Path) -> None:
    """Refuse to write over a folder whose every part is real (weights.json's `synthetic` is true if any part is)."""
    if (out / INFO_FILE).is_file() and read_weights_info(out).get("synthetic") is False:
        raise ClassifierError(
            f"{out} holds real (downloaded) weights; synthetic ones would replace them. "
            f"Choose another folder with --out.", code="weights_exist",
        )


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file next to path, then rename: a reader never sees half a file."""
    import torch

    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_info(out: Path, info: dict) -> None:
    """Write weights.json atomically."""
    with _atomic_path(out / INFO_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are read by service users too
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
