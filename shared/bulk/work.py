"""One batch of a bulk job, in plain Python (the Ray actors in `job.py` are thin wrappers around these).

`FeatureWork` reads each photo once, decodes it once and runs every extractor once on it (so both CLIP members
share one embedding), through the feature cache when there is one. `ClassifyWork` adds the members' learners and
the stack: the same artifacts and the same arithmetic as the services, so its answers equal the gateway's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from shared import artifacts
from shared.config import Settings
from shared.errors import ClassifierError
from shared.features.cache import FeatureCache
from shared.features.extract import reason
from shared.features.registry import extractor_class, load_extractor
from shared.images import ImageLimits, decode_image, probe_image, sha256_hex
from shared.learning.meta_model import STACK, MetaEnsemble
from shared.weights import manifest_parts


def read_bytes(path: str, limits: ImageLimits) -> bytes:
    """A photo's bytes, at most one byte past the limit (so a 60 MB file costs 20 MB to refuse, not 60)."""
    with open(path, "rb") as fh:
        return fh.read(limits.max_bytes + 1)


@dataclass
class Featurized:
    """One batch's features: rows i with values[kind][i]; errors[i] for rows that have none."""

    hashes: list[str | None]
    values: dict[str, dict[int, Any]]
    errors: dict[int, str] = field(default_factory=dict)


class FeatureWork:
    """Every extractor of `configs` (as recorded by a manifest, or train's), loaded once, and the feature cache."""

    def __init__(self, weights_dir: Path, settings: Settings, configs: dict[str, dict], cache_path: Path | None):
        self.settings, self.configs = settings, dict(configs)
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.extractors = {kind: load_extractor(kind, weights_dir, settings, config)
                           for kind, config in self.configs.items()}
        self.cache = FeatureCache(cache_path) if cache_path else None

    def featurize(self, paths: Sequence[str], errors: Sequence[str | None]) -> Featurized:
        """Features of every kind for the photos without an input error; a photo that fails gets its reason."""
        done = Featurized([None] * len(paths), {kind: {} for kind in self.configs},
                          {i: e for i, e in enumerate(errors) if e})
        data = self._read(paths, done)
        cached = self._cached(done)
        images = self._decode(data, cached, done)
        for kind, extractor in self.extractors.items():
            todo = {i: img for i, img in images.items() if i not in cached[kind] and i not in done.errors}
            fresh = _extract(extractor, todo, done.errors)
            done.values[kind] = {**cached[kind], **fresh}
            if self.cache is not None and fresh:
                self.cache.put_many(self.configs[kind], {done.hashes[i]: v for i, v in fresh.items()})
        for kind in done.values:  # a photo another extractor failed on has no row, whatever this one said
            done.values[kind] = {i: v for i, v in done.values[kind].items() if i not in done.errors}
        return done

    def _read(self, paths: Sequence[str], done: Featurized) -> dict[int, bytes]:
        data = {}
        for i, path in enumerate(paths):
            if i in done.errors:
                continue
            try:
                data[i] = read_bytes(path, self.limits)
                probe_image(data[i], self.limits)
            except (OSError, ClassifierError) as exc:
                data.pop(i, None)
                done.errors[i] = reason(exc)
                continue
            done.hashes[i] = sha256_hex(data[i])
        return data

    def _cached(self, done: Featurized) -> dict[str, dict[int, Any]]:
        """{kind: {row: value}} already in the cache (none without one)."""
        if self.cache is None:
            return {kind: {} for kind in self.configs}
        rows = {h: i for i, h in enumerate(done.hashes) if h is not None}
        found = {kind: self.cache.get_many(config, rows) for kind, config in self.configs.items()}
        return {kind: {i: values[h] for h, i in rows.items() if h in values} for kind, values in found.items()}

    def _decode(self, data: dict[int, bytes], cached: dict[str, dict[int, Any]], done: Featurized) -> dict[int, Any]:
        """Decode the photos some extractor still needs, once each."""
        images = {}
        for i, raw in data.items():
            if all(i in cached[kind] for kind in self.configs):
                continue
            try:
                images[i] = decode_image(raw, self.limits)
            except ClassifierError as exc:
                done.errors[i] = reason(exc)
        return images


def _extract(extractor: Any, images: dict[int, Any], errors: dict[int, str]) -> dict[int, Any]:
    """{row: value} in one extract() call; if the batch fails, photo by photo, so one bad photo fails alone."""
    if not images:
        return {}
    try:
        return dict(zip(images, extractor.extract(list(images.values()))))
    except Exception:  # noqa: BLE001 - any extractor failure: find the photo it belongs to
        pass
    values = {}
    for i, image in images.items():
        try:
            values[i] = extractor.extract([image])[0]
        except Exception as exc:  # noqa: BLE001 - the photo's row carries it; the job goes on
            errors[i] = f"{extractor.kind} failed: {reason(exc)}"
    return values


# --- classification ----------------------------------------------------------------------------------------------
def output_schema(classes: Sequence[str], members: Sequence[str]) -> pa.Schema:
    """One row per input photo; `proba_<name>` lists every class's probability in `classes` order (the job folder's
    `_job.json` names them), for the stack and each member. Rows with an error have nulls in between."""
    probas = [pa.field(f"proba_{name}", pa.list_(pa.float64())) for name in (STACK, *sorted(members))]
    return pa.schema([
        ("row", pa.int64()), ("path", pa.string()), ("label", pa.string()), ("sha256", pa.string()),
        ("class_id", pa.int64()), ("class_label", pa.string()), ("proba", pa.float64()), *probas,
        ("model_version", pa.string()), ("weights", pa.string()), ("synthetic_weights", pa.bool_()),
        ("error", pa.string()),
    ], metadata={"classes": json.dumps(list(classes))})


class ClassifyWork:
    """The trained members and the stack over one batch of input rows (see `inputs.SCHEMA`)."""

    def __init__(self, models_dir: Path, weights_dir: Path, settings: Settings, cache_path: Path | None):
        from shared.learning.learners import load_pipelines

        self.manifest = artifacts.load_manifest(models_dir)
        self.classes = list(self.manifest["classes"])
        self.pipelines = load_pipelines(models_dir, self.manifest)
        self.meta = MetaEnsemble.load(models_dir, self.manifest)
        self.features = FeatureWork(weights_dir, settings, self.manifest["features"], cache_path)
        self.schema = output_schema(self.classes, self.manifest["members"])
        self.weights = manifest_parts(self.manifest)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths, errors = batch.column("path").to_pylist(), batch.column("error").to_pylist()
        done = self.features.featurize(paths, errors)
        ok = [i for i in range(len(paths)) if i not in done.errors]
        probas = self._probas(done, ok)
        columns = {name: [None] * len(paths) for name in self.schema.names}
        columns.update(row=batch.column("row").to_pylist(), path=paths, label=batch.column("label").to_pylist(),
                       sha256=done.hashes, error=[done.errors.get(i) for i in range(len(paths))])
        columns.update(model_version=[self.manifest["model_version"]] * len(paths),
                       weights=[json.dumps(self.weights, sort_keys=True)] * len(paths),
                       synthetic_weights=["synthetic" in self.weights.values()] * len(paths))
        for j, i in enumerate(ok):
            stack = probas[STACK][j]
            k = int(np.argmax(stack))
            columns["class_id"][i], columns["class_label"][i], columns["proba"][i] = k, self.classes[k], float(stack[k])
            for name, p in probas.items():
                columns[f"proba_{name}"][i] = p[j].tolist()
        return pa.table(columns, schema=self.schema)

    def _probas(self, done: Featurized, ok: list[int]) -> dict[str, np.ndarray]:
        """{member or stack: (len(ok), K)}, as the members and the gateway compute them."""
        if not ok:
            return {}
        from shared.learning.evaluation import member_probas

        stacked = {kind: extractor_class(kind).stack([done.values[kind][i] for i in ok], self.manifest["features"][kind])
                   for kind in done.values}
        probas = member_probas(self.pipelines, stacked, len(self.classes))
        probas[STACK] = self.meta.predict_proba(probas)
        return probas
