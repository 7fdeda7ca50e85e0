"""Feature extraction for training and offline scoring: registered extractors over image files, through the cache."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from shared.config import Settings
from shared.errors import ClassifierError
from shared.features.cache import FeatureCache
from shared.features.registry import Extractor, expected_config, extractor_class, extractor_kinds, load_extractor
from shared.images import ImageLimits, probe_image, read_image_file, sha256_hex

log = logging.getLogger(__name__)


@dataclass
class FeatureTable:
    """Features of the readable images; row i belongs to paths[rows[i]].

    values[kind] is the learners' input for kind over the rows (CLIP: (n, dim) matrix; OCR: list of texts).
    """

    rows: list[int]
    hashes: list[str]
    values: dict[str, Any]
    errors: dict[int, str]
    config: dict[str, dict]
    stats: dict[str, Any] = field(default_factory=dict)


def extract_features(
    paths: Sequence[Path],
    settings: Settings,
    weights_dir: Path,
    kinds: Sequence[str] | None = None,
    cache: FeatureCache | None = None,
    progress: bool = True,
    recorded: Mapping[str, dict] | None = None,
) -> FeatureTable:
    """Each kind's features (default: every registered kind) for image files; cached ones reused, unreadable listed.

    cache=None uses the default cache at settings.cache_dir; models load only if some feature is missing.
    recorded ({kind: config} from a manifest) reproduces those configs, refusing weights that differ.
    """
    started = time.perf_counter()
    kinds = _check_kinds(extractor_kinds() if kinds is None else kinds)
    cache = cache or FeatureCache.default(settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    rows, hashes, errors = _hash_files(paths, limits)
    recorded = recorded or {}
    configs = {kind: expected_config(kind, weights_dir, settings, recorded.get(kind)) for kind in kinds}
    found = {kind: cache.get_many(configs[kind], hashes) for kind in kinds}
    missing = {kind: [h for h in dict.fromkeys(hashes) if h not in found[kind]] for kind in kinds}
    stats: dict[str, Any] = {kind: {"hits": len(found[kind]), "misses": len(missing[kind])} for kind in kinds}
    if any(missing.values()):
        first_path = {h: Path(paths[i]) for i, h in zip(rows, hashes)}
        job = _Job(first_path, missing, configs, settings, weights_dir, limits)
        compute = _compute_on_ray if settings.feature_engine == "ray" else _compute_missing
        failed = compute(job, cache, found, progress)
        rows, hashes, errors = _drop_failed(rows, hashes, errors, failed)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    values = {kind: extractor_class(kind).stack([found[kind][h] for h in hashes], configs[kind]) for kind in kinds}
    return FeatureTable(rows=rows, hashes=hashes, values=values, errors=errors, config=configs, stats=stats)


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {extractor_kinds()}; got {tuple(kinds)}")
    for kind in kinds:
        extractor_class(kind)  # an unknown kind fails here, naming the known kinds
    return tuple(kinds)


def _hash_files(paths: Sequence[Path], limits: ImageLimits) -> tuple[list[int], list[str], dict[int, str]]:
    """Read each file's bytes once for its sha256; a header check catches most unreadable files early."""
    rows, hashes, errors = [], [], {}
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            probe_image(data, limits)
        except (OSError, ClassifierError) as exc:
            errors[i] = reason(exc)
            continue
        rows.append(i)
        hashes.append(sha256_hex(data))
    return rows, hashes, errors


def reason(exc: Exception) -> str:
    """What went wrong with one image, as its error: the ClassifierError's message, else the exception."""
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
    extractors = {kind: load_extractor(kind, job.weights_dir, job.settings, job.configs[kind])
                  for kind, hs in job.missing.items() if hs}
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
                values = _run(extractor, {h: img for h, img in images.items() if h in wanted[kind]})
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


def _compute_on_ray(job: _Job, cache: FeatureCache, found: dict[str, dict], progress: bool) -> dict[str, str]:
    """_compute_missing on the bulk pipeline's actors (FEATURE_ENGINE=ray): their features go to the cache, and are
    read back from it here."""
    from shared.bulk.job import featurize

    kinds = [kind for kind, hs in job.missing.items() if hs]
    todo = {h: job.first_path[h] for h in dict.fromkeys(h for kind in kinds for h in job.missing[kind])}
    failed = featurize(todo, {kind: job.configs[kind] for kind in kinds}, job.weights_dir, job.settings, cache,
                       progress=progress)
    for kind in kinds:
        found[kind].update(cache.get_many(job.configs[kind], job.missing[kind]))
    log.info("extracted %d images' features on Ray (%s)", len(todo), ", ".join(kinds))
    return failed


def _rates(timing: dict[str, list]) -> str:
    """'clip 0.10 s/img, ocr 1.05 s/img': where extraction time goes."""
    return ", ".join(f"{kind} {seconds / max(1, n):.2f} s/img" for kind, (seconds, n) in timing.items())


def _decode_chunk(hashes: list[str], first_path: dict[str, Path], limits: ImageLimits,
                  failed: dict[str, str]) -> dict[str, Any]:
    images = {}
    for h in hashes:
        try:
            images[h], _ = read_image_file(first_path[h], limits)
        except (OSError, ClassifierError) as exc:
            failed[h] = reason(exc)
    return images


def _run(extractor: Extractor, images: dict[str, Any]) -> dict[str, Any]:
    """{image_hash: value} for the decoded images, in one extract() call."""
    if not images:
        return {}
    return dict(zip(images, extractor.extract(list(images.values()))))


def _drop_failed(rows: list[int], hashes: list[str], errors: dict[int, str],
                 failed: dict[str, str]) -> tuple[list[int], list[str], dict[int, str]]:
    keep = [(i, h) for i, h in zip(rows, hashes) if h not in failed]
    errors = {**errors, **{i: failed[h] for i, h in zip(rows, hashes) if h in failed}}
    return [i for i, _ in keep], [h for _, h in keep], dict(sorted(errors.items()))


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="features", unit="img", disable=not enabled)
