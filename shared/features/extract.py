"""Feature extraction for training, with a SQLite cache keyed by (extractor config, image bytes)."""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from shared.config import Settings
from shared.errors import ClassifierError, WeightsMissing
from shared.images import ImageLimits, probe_image, read_image_file, sha256_hex

log = logging.getLogger(__name__)

KINDS = ("clip", "ocr")
CACHE_FILE = "features.sqlite3"
_SQL_CHUNK = 500  # stays under SQLite's bound-parameter limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    config_hash TEXT NOT NULL,
    image_hash  TEXT NOT NULL,
    vector      BLOB,
    text        TEXT,
    PRIMARY KEY (config_hash, image_hash)
) WITHOUT ROWID
"""


def config_hash(config: dict) -> str:
    """sha256 of an extractor config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """CLIP vectors and OCR texts by (config hash, image sha256); WAL, one short connection per call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @classmethod
    def default(cls, settings: Settings) -> "FeatureCache":
        """The cache at settings.cache_dir/features.sqlite3."""
        return cls(Path(settings.cache_dir) / CACHE_FILE)

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per call is safe across threads and processes; WAL lets readers run during a write.
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def get_many(self, config: dict, image_hashes: Iterable[str]) -> dict[str, Any]:
        """{image_hash: vector (float32 array) or text} for the hashes present."""
        key, wanted, found = config_hash(config), list(dict.fromkeys(image_hashes)), {}
        with self._connect() as db:
            for start in range(0, len(wanted), _SQL_CHUNK):
                chunk = wanted[start:start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT image_hash, vector, text FROM features WHERE config_hash=? "
                                  f"AND image_hash IN ({marks})", [key, *chunk])
                found.update((h, _decode_value(config, vec, text)) for h, vec, text in rows)
        return found

    def put_many(self, config: dict, values: dict[str, Any]) -> None:
        """Store {image_hash: vector or text} under config."""
        key = config_hash(config)
        rows = [(key, h, *_encode_value(config, value)) for h, value in values.items()]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)

    def count(self) -> int:
        """Number of stored features (all configs)."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]


def _encode_value(config: dict, value: Any) -> tuple[bytes | None, str | None]:
    if config["kind"] == "clip":
        return np.asarray(value, dtype=np.float32).tobytes(), None
    return None, str(value)


def _decode_value(config: dict, vector: bytes | None, text: str | None) -> Any:
    if config["kind"] == "clip":
        return np.frombuffer(vector, dtype=np.float32)
    return text


@dataclass
class FeatureTable:
    """Features of the readable images; row i belongs to paths[rows[i]]."""

    rows: list[int]
    hashes: list[str]
    clip: np.ndarray | None
    text: list[str] | None
    errors: dict[int, str]
    config: dict[str, dict]
    stats: dict[str, Any] = field(default_factory=dict)


def extract_features(
    paths: Sequence[Path],
    settings: Settings,
    weights_dir: Path,
    kinds: Sequence[str] = KINDS,
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> FeatureTable:
    """CLIP vectors and/or OCR text for image files; cached features are reused, unreadable files listed.

    cache=None uses the default cache at settings.cache_dir; models load only if some feature is missing.
    """
    started = time.perf_counter()
    _check_kinds(kinds)
    cache = cache or FeatureCache.default(settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    rows, hashes, errors = _hash_files(paths, limits)
    configs = {kind: _config_for(kind, weights_dir, settings) for kind in kinds}
    found = {kind: cache.get_many(configs[kind], hashes) for kind in kinds}
    missing = {kind: [h for h in dict.fromkeys(hashes) if h not in found[kind]] for kind in kinds}
    stats: dict[str, Any] = {kind: {"hits": len(found[kind]), "misses": len(missing[kind])} for kind in kinds}
    if any(missing.values()):
        first_path = {h: Path(paths[i]) for i, h in zip(rows, hashes)}
        job = _Job(first_path, missing, configs, settings, weights_dir, limits)
        failed = _compute_missing(job, cache, found, progress)
        rows, hashes, errors = _drop_failed(rows, hashes, errors, failed)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return FeatureTable(
        rows=rows, hashes=hashes, errors=errors, config=configs, stats=stats,
        clip=_stack(found["clip"], hashes, configs["clip"]["dim"]) if "clip" in kinds else None,
        text=[found["ocr"][h] for h in hashes] if "ocr" in kinds else None,
    )


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}; got {tuple(kinds)}")


def _config_for(kind: str, weights_dir: Path, settings: Settings) -> dict:
    from shared import weights

    info = weights.read_weights_info(weights_dir)
    if kind not in info:
        raise WeightsMissing(f"{weights_dir} has no {kind!r} weights. {weights.FETCH_HINT}")
    if kind == "clip":
        from shared.features.clip import clip_config

        return clip_config(info["clip"])
    from shared.features.ocr import ocr_config

    return ocr_config(info["ocr"], settings)


def _hash_files(paths: Sequence[Path], limits: ImageLimits) -> tuple[list[int], list[str], dict[int, str]]:
    """Read each file's bytes once for its sha256; a header check catches most unreadable files early."""
    rows, hashes, errors = [], [], {}
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            probe_image(data, limits)
        except (OSError, ClassifierError) as exc:
            errors[i] = _reason(exc)
            continue
        rows.append(i)
        hashes.append(sha256_hex(data))
    return rows, hashes, errors


def _reason(exc: Exception) -> str:
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


@dataclass
class _Job:
    """What the missing features are and how to compute them."""

    first_path: dict[str, Path]
    missing: dict[str, list[str]]
    configs: dict[str, dict]
    settings: Settings
    weights_dir: Path
    limits: ImageLimits


def _compute_missing(job: _Job, cache: FeatureCache, found: dict[str, dict], progress: bool) -> dict[str, str]:
    """Decode each missing image once, in chunks, run only the extractors that miss it, and cache the results.

    Returns {image_hash: reason} for images that could not be decoded.
    """
    extractors = {kind: _load_extractor(kind, job.weights_dir, job.settings) for kind, hs in job.missing.items() if hs}
    wanted = {kind: set(job.missing[kind]) for kind in extractors}
    todo = list(dict.fromkeys(h for hs in job.missing.values() for h in hs))
    # One CLIP batch per chunk: OCR takes seconds per photo on CPU, so bigger chunks leave the bar still for minutes.
    chunk, failed = max(1, job.settings.clip_batch_size), {}
    timing = {kind: [0.0, 0] for kind in extractors}  # kind -> [seconds, images]
    with _progress_bar(len(todo), progress) as bar:
        for start in range(0, len(todo), chunk):
            images = _decode_chunk(todo[start:start + chunk], job.first_path, job.limits, failed)
            for kind, extractor in extractors.items():
                began = time.perf_counter()
                values = _run(kind, extractor, {h: img for h, img in images.items() if h in wanted[kind]})
                timing[kind][0] += time.perf_counter() - began
                timing[kind][1] += len(values)
                cache.put_many(job.configs[kind], values)  # per chunk: an interrupted run keeps its work
                found[kind].update(values)
            bar.update(len(todo[start:start + chunk]))
            bar.set_postfix_str(_rates(timing), refresh=False)
    for kind in extractors:
        log.info("extracted %d %s features in %.0f s (%s; %s weights)", len(wanted[kind]), kind, timing[kind][0],
                 _rates({kind: timing[kind]}), "SYNTHETIC" if job.configs[kind]["synthetic"] else "real")
    return failed


def _rates(timing: dict[str, list]) -> str:
    """'clip 0.10 s/img, ocr 1.05 s/img': where extraction time goes."""
    return ", ".join(f"{kind} {seconds / max(1, n):.2f} s/img" for kind, (seconds, n) in timing.items())


def _load_extractor(kind: str, weights_dir: Path, settings: Settings) -> Any:
    if kind == "clip":
        from shared.features.clip import ClipEmbedder

        return ClipEmbedder.load(weights_dir, settings)
    from shared.features.ocr import OcrReader

    return OcrReader.load(weights_dir, settings)


def _decode_chunk(hashes: list[str], first_path: dict[str, Path], limits: ImageLimits,
                  failed: dict[str, str]) -> dict[str, Any]:
    images = {}
    for h in hashes:
        try:
            images[h], _ = read_image_file(first_path[h], limits)
        except (OSError, ClassifierError) as exc:
            failed[h] = _reason(exc)
    return images


def _run(kind: str, extractor: Any, images: dict[str, Any]) -> dict[str, Any]:
    if not images:
        return {}
    if kind == "clip":
        vectors = extractor.embed(list(images.values()))
        return dict(zip(images, vectors))
    return {h: extractor.read(img) for h, img in images.items()}


def _drop_failed(rows: list[int], hashes: list[str], errors: dict[int, str],
                 failed: dict[str, str]) -> tuple[list[int], list[str], dict[int, str]]:
    keep = [(i, h) for i, h in zip(rows, hashes) if h not in failed]
    errors = {**errors, **{i: failed[h] for i, h in zip(rows, hashes) if h in failed}}
    return [i for i, _ in keep], [h for _, h in keep], dict(sorted(errors.items()))


def _stack(vectors: dict[str, np.ndarray], hashes: list[str], dim: int) -> np.ndarray:
    if not hashes:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([vectors[h] for h in hashes]).astype(np.float32, copy=False)


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="features", unit="img", disable=not enabled)
