"""The bulk jobs on Ray Data: `classify_batch` (photos -> Parquet, resumable) and `featurize` (train's feature pass).

The pipeline: the input table -> `map_batches` over a pool of actors, each holding every extractor (and, to
classify, the learners and the stack), one CPU each -> batches back to this process, which writes them. One actor
runs a photo end to end: it is read, decoded, embedded and read by OCR once, and no decoded pixels travel between
processes. The extractors' CPU is the limit (BENCHMARKS.md, "Bulk"), so the pool is one actor per CPU of the
cluster, wherever its nodes are.

Resume: the output folder holds `_job.json` (model version, input fingerprint, classes) and `part-NNNNN.parquet`
files, each written to a temporary name and renamed, so a part is whole or absent. A rerun reads the `row` column of
the parts and sends only the rows missing from them.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared import artifacts
from shared.bulk.inputs import fingerprint, read_inputs
from shared.bulk.work import ClassifyWork, FeatureWork, output_schema
from shared.config import Settings
from shared.errors import DatasetError, JobMismatch
from shared.features.cache import FeatureCache
from shared.features.registry import expected_config, extractor_class
from shared.weights import manifest_parts

log = logging.getLogger(__name__)

JOB_FILE = "_job.json"
PART_GLOB = "part-*.parquet"
NODE = "_node"  # which Ray node answered a row: counted for the summary, not written
CPU_BATCH = 16  # photos an actor call on CPU (see _run)
PART_ROWS, PART_S = 2000, 30.0  # a part per this many rows or seconds: few files, little redone after a crash
PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class Summary:
    """What a run did: rows written now and before, errors, where they ran, how fast."""

    out: Path
    total: int
    written: int
    resumed: int
    errors: int
    seconds: float
    nodes: dict[str, int] = field(default_factory=dict)
    synthetic_parts: list[str] = field(default_factory=list)

    @property
    def photos_per_s(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        synthetic = (f"; SYNTHETIC {' and '.join(self.synthetic_parts)} weights: not their real accuracy"
                     if self.synthetic_parts else "")
        return (f"{self.out}: {self.resumed + self.written} of {self.total} rows ({self.written} now, "
                f"{self.resumed} from an earlier run), {self.errors} with an error, {self.photos_per_s:.1f} photos/s "
                f"on {len(self.nodes)} node(s){synthetic}")


# --- the output folder --------------------------------------------------------------------------------------------
class OutputFolder:
    """`_job.json` + whole Parquet parts; what an earlier run of the same job already wrote."""

    def __init__(self, path: Path, job: dict):
        self.path, self.job = Path(path), job
        self.next_part = 0

    def open(self) -> set[int]:
        """Create, or check that it is this job's and return the rows it holds (leftover temporaries removed)."""
        meta = self.path / JOB_FILE
        if meta.exists():
            earlier = json.loads(meta.read_text())
            for key in ("model_version", "input"):
                if earlier.get(key) != self.job[key]:
                    raise JobMismatch(f"{self.path} holds a job with {key} {earlier.get(key)!r}, not {self.job[key]!r}; "
                                     "resuming would mix the two. Write to a new --out (or remove the folder).")
        elif self.path.exists() and any(self.path.iterdir()):
            raise JobMismatch(f"{self.path} is not empty and is no classify-batch output; choose a new --out.")
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob("*.tmp"):
            stale.unlink()
        meta.write_text(json.dumps(self.job, indent=2) + "\n")
        parts = sorted(self.path.glob(PART_GLOB))
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
        return {row for part in parts for row in pq.read_table(part, columns=["row"]).column("row").to_pylist()}

    def write(self, table: pa.Table) -> Path:
        """A part, whole or not at all: written under a temporary name, then renamed."""
        final = self.path / f"part-{self.next_part:05d}.parquet"
        temporary = final.with_name(final.name + ".tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self.next_part += 1
        return final


def read_output(path: Path) -> pa.Table:
    """Every row a job folder holds, in input order."""
    parts = sorted(Path(path).glob(PART_GLOB))
    if not parts:
        raise DatasetError(f"{path} holds no {PART_GLOB}.")
    return pa.concat_tables(pq.read_table(p) for p in parts).sort_by("row")


# --- Ray ----------------------------------------------------------------------------------------------------------
class RaySession:
    """A local Ray started in-process (the default), or a connection to a cluster; shut down when done."""

    def __init__(self, address: str, settings: Settings):
        self.address, self.settings = address, settings

    def __enter__(self) -> "RaySession":
        import ray
        import ray.data

        # The package travels with the job, so a cluster's nodes need its dependencies, not this checkout.
        runtime_env = {"py_modules": [str(PACKAGE)]} if self.address else {
            "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                                       os.environ.get("PYTHONPATH")]))}}
        ray.init(address=self.address or None, runtime_env=runtime_env, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours (tqdm) counts written rows; Ray's would add one bar per stage
        context.print_on_execution_start = False
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        ray.shutdown()

    def pool(self, actors: int) -> tuple[int, dict]:
        """(actors, per-actor resources): one CPU each, a GPU share each when the cluster has GPUs."""
        import ray

        resources = ray.cluster_resources()
        cpus, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0)
        wants_gpu = gpus > 0 and self.settings.device != "cpu"
        size = actors or (int(gpus) if wants_gpu else max(1, cpus))
        return size, {"num_cpus": 1, **({"num_gpus": min(1.0, gpus / size)} if wants_gpu else {})}


def _actor_settings(settings: Settings) -> Settings:
    # One CPU per actor: torch's own threads would fight the other actors for it.
    return settings if settings.torch_threads else settings.replace(torch_threads=1)


class _ClassifyActor:
    def __init__(self, models_dir: str, weights_dir: str, settings: Settings, cache_path: str | None):
        import ray

        self.work = ClassifyWork(Path(models_dir), Path(weights_dir), settings, Path(cache_path) if cache_path else None)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = self.work(batch)
        return out.append_column(NODE, pa.array([self.node] * len(out), pa.string()))


class _FeatureActor:
    def __init__(self, weights_dir: str, settings: Settings, configs: dict):
        self.work = FeatureWork(Path(weights_dir), settings, configs, cache_path=None)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Each photo's features, encoded by its extractor's cache codec: the driver writes the cache, so the
        nodes need no shared one."""
        n = len(batch)
        done = self.work.featurize(batch.column("path").to_pylist(), [None] * n)
        columns = {"row": batch.column("row"), "sha256": done.hashes,
                   "error": [done.errors.get(i) for i in range(n)]}
        for kind, values in done.values.items():
            encode = extractor_class(kind).encode
            columns[f"feature_{kind}"] = [encode(values[i]) if i in values else None for i in range(n)]
        return pa.table(columns)


def _run(session: RaySession, table: pa.Table, actor: type, kwargs: dict, actors: int,
         batch_size: int | None) -> Iterator[pa.Table]:
    import ray

    size, resources = session.pool(actors)
    settings_batch = session.settings.clip_batch_size
    if batch_size is None:
        # On CPU, 16 photos (~8 s of OCR) an actor call: CLIP's cost a photo barely moves with its batch (measured
        # here at one thread: 0.081 CPU-s at 8, 0.074 at 32), and a crash loses less work in flight. On GPUs, CLIP's.
        batch_size = settings_batch if "num_gpus" in resources else min(settings_batch, CPU_BATCH)
    batch_size = max(1, min(batch_size, -(-len(table) // size)))  # a small job still reaches every actor
    log.info("bulk job: %d rows over %d actors (%s each), batches of %d", len(table), size, resources, batch_size)
    # Blocks cut here, not by a repartition: every CPU belongs to an actor, so a Ray task that needs one would wait
    # for ever. At least 4 blocks an actor keep every actor fed; at most 8 batches a block keep a million-photo
    # input to some thousands of blocks.
    block = max(batch_size, min(batch_size * 8, -(-len(table) // (size * 4))))
    dataset = ray.data.from_arrow([table.slice(start, block) for start in range(0, len(table), block)])
    mapped = dataset.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="pyarrow",
                                 compute=ray.data.ActorPoolStrategy(size=size), **resources)
    yield from mapped.iter_batches(batch_format="pyarrow", batch_size=None)


# --- the jobs -----------------------------------------------------------------------------------------------------
def classify_batch(source: Path, out: Path, models_dir: Path, weights_dir: Path, settings: Settings,
                   cache_dir: Path | None = None, actors: int = 0, batch_size: int | None = None,
                   part_rows: int = PART_ROWS, progress: bool = True) -> Summary:
    """Classify every photo of `source` into Parquet parts under `out`; a rerun finishes what a crash left."""
    started = time.perf_counter()
    manifest = artifacts.load_manifest(models_dir)
    for kind, recorded in manifest["features"].items():  # refuse other weights here, before any actor starts
        expected_config(kind, weights_dir, settings, recorded)
    inputs = read_inputs(source)
    parts = manifest_parts(manifest)
    job = {"model_version": manifest["model_version"], "input": fingerprint(inputs), "source": str(source),
           "rows": len(inputs), "classes": manifest["classes"], "members": sorted(manifest["members"]),
           "weights": parts, "synthetic_weights": "synthetic" in parts.values()}
    folder = OutputFolder(out, job)
    done = folder.open()
    todo = inputs.filter(pc.invert(pc.is_in(inputs.column("row"), pa.array(sorted(done), pa.int64()))))
    summary = Summary(Path(out), len(inputs), 0, len(done), 0, 0.0,
                      synthetic_parts=sorted(k for k, v in parts.items() if v == "synthetic"))
    if len(todo):
        schema = output_schema(manifest["classes"], manifest["members"])
        kwargs = {"models_dir": str(models_dir), "weights_dir": str(weights_dir),
                  "settings": _actor_settings(settings), "cache_path": _cache_path(cache_dir)}
        with RaySession(settings.ray_address, settings) as session, _bar(len(inputs), len(done), progress) as bar:
            batches = _run(session, todo, _ClassifyActor, kwargs, actors or settings.bulk_actors, batch_size)
            _write(batches, folder, schema, summary, bar, part_rows)
    summary.errors = _count_errors(out)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _write(batches: Iterator[pa.Table], folder: OutputFolder, schema: pa.Schema, summary: Summary, bar: Any,
           part_rows: int) -> None:
    """Collect answered rows and write a part per part_rows rows or PART_S seconds; the rest when the batches end."""
    pending, pending_rows, flushed_at = [], 0, time.monotonic()
    nodes: Counter[str] = Counter()
    for batch in batches:
        nodes.update(batch.column(NODE).to_pylist())
        pending.append(batch.drop_columns([NODE]).cast(schema))
        pending_rows += len(batch)
        if pending_rows >= part_rows or time.monotonic() - flushed_at >= PART_S:
            folder.write(pa.concat_tables(pending))
            bar.update(pending_rows)
            summary.written += pending_rows
            pending, pending_rows, flushed_at = [], 0, time.monotonic()
    if pending:
        folder.write(pa.concat_tables(pending))
        bar.update(pending_rows)
        summary.written += pending_rows
    summary.nodes = dict(nodes)


def _count_errors(out: Path) -> int:
    tables = (pq.read_table(part, columns=["error"]) for part in Path(out).glob(PART_GLOB))
    return sum(len(table) - table.column("error").null_count for table in tables)


def featurize(first_path: dict[str, Path], configs: dict[str, dict], weights_dir: Path, settings: Settings,
              cache: FeatureCache, actors: int = 0, progress: bool = True) -> dict[str, str]:
    """Compute these images' features (keyed by sha256) on the Ray pipeline and store them in `cache`; returns
    {sha256: reason} for the images that got none. train's and evaluate's `--engine ray`."""
    hashes = list(first_path)
    table = pa.table({"row": pa.array(range(len(hashes)), pa.int64()),
                      "path": [str(first_path[h]) for h in hashes]})
    kwargs = {"weights_dir": str(weights_dir), "settings": _actor_settings(settings), "configs": configs}
    failed = {}
    with RaySession(settings.ray_address, settings) as session, _bar(len(hashes), 0, progress, "features") as bar:
        for batch in _run(session, table, _FeatureActor, kwargs, actors or settings.bulk_actors, None):
            failed.update(_store_features(batch, hashes, configs, cache))
            bar.update(len(batch))
    return failed


def _store_features(batch: pa.Table, hashes: list[str], configs: dict[str, dict],
                    cache: FeatureCache) -> dict[str, str]:
    """Put one batch's features in the cache; {sha256: reason} for its rows without them."""
    failed, rows = {}, batch.column("row").to_pylist()
    for i, (row, read, error) in enumerate(zip(rows, batch.column("sha256").to_pylist(),
                                               batch.column("error").to_pylist())):
        if error or read != hashes[row]:
            failed[hashes[row]] = error or "the file changed while it was read"
    for kind, config in configs.items():
        decode = extractor_class(kind).decode
        column = batch.column(f"feature_{kind}").to_pylist()
        cache.put_many(config, {hashes[row]: decode(value) for row, value in zip(rows, column)
                                if value is not None and hashes[row] not in failed})
    return failed


def _cache_path(cache_dir: Path | None) -> str | None:
    from shared.features.cache import CACHE_FILE

    return str(Path(cache_dir) / CACHE_FILE) if cache_dir else None


def _bar(total: int, initial: int, enabled: bool, desc: str = "photos") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="photo", disable=not enabled, smoothing=0.1)
