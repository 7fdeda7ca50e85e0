"""Training-side benchmarks: feature-extraction throughput cold and from the cache; the model the services serve."""
from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

from shared.config import Settings
from shared.learning.data import balanced_subset, folder_records


def write_subset_csv(root: Path, per_class: int, out: Path, seed: int = 0) -> list[Path]:
    """A `path,label` CSV of `per_class` images of each first-level class under root; returns the paths."""
    records = balanced_subset(folder_records(root), per_class, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows((str(path.resolve()), label) for path, label in records)
    return [path for path, _ in records]


def _timed_load(kind: str, weights_dir: Path, settings: Settings) -> float:
    from shared.features.registry import load_extractor

    started = time.perf_counter()
    load_extractor(kind, weights_dir, settings)
    return time.perf_counter() - started


def bench_features(paths: list[Path], weights_dir: Path, settings: Settings) -> dict:
    """Images/s of extract_features per extractor on an empty cache, then for both from a full cache."""
    from shared.features.cache import FeatureCache
    from shared.features.extract import extract_features

    shutil.rmtree(settings.cache_dir, ignore_errors=True)
    cache = FeatureCache.default(settings)
    result: dict = {"images": len(paths), "cold": {}}
    for kind in ("clip", "ocr"):
        _timed_load(kind, weights_dir, settings)  # the first load also pays imports and a cold file cache
        load_s = _timed_load(kind, weights_dir, settings)  # what extract_features pays below
        table = extract_features(paths, settings, weights_dir, kinds=(kind,), cache=cache, progress=False)
        seconds = table.stats["seconds"]
        result["cold"][kind] = {
            "seconds": seconds, "model_load_s": load_s, "images_per_s": len(table.rows) / seconds,
            "images_per_s_without_load": len(table.rows) / max(seconds - load_s, 1e-9),
        }
    table = extract_features(paths, settings, weights_dir, kinds=("clip", "ocr"), cache=cache, progress=False)
    result["cached"] = {"seconds": table.stats["seconds"], "images_per_s": len(table.rows) / table.stats["seconds"],
                        "hits": {kind: table.stats[kind]["hits"] for kind in ("clip", "ocr")}}
    return result


def train_models(data_csv: Path, out: Path, weights_dir: Path, settings: Settings) -> dict:
    """Train the stack the services will serve (features come from the warm cache)."""
    from shared.learning import training

    started = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    manifest = training.train(data=data_csv, out=out, weights_dir=weights_dir, settings=settings, folds=3)
    return {"seconds": time.perf_counter() - started, "classes": manifest["classes"]}
