"""Settings: one typed object, read from the environment. Nothing else reads os.environ."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from shared import members

# Where the member table's services are found when MEMBER_URLS is empty: all on this host (`python -m shared serve`).
LOCAL_HOST = "127.0.0.1"


def _env(name: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every tunable, with its environment variable and documented default."""

    datasets_dir: Path = _env("DATASETS_DIR", Path("../shared/datasets"), "Read-only datasets folder")
    models_dir: Path = _env("MODELS_DIR", Path("models"), "Trained artifacts")
    weights_dir: Path = _env("WEIGHTS_DIR", Path("models/weights"), "CLIP and EasyOCR weights")
    cache_dir: Path = _env("FEATURE_CACHE_DIR", Path("models/cache"), "Feature cache")

    # image limits (shared by training and serving)
    max_image_bytes: int = _env("MAX_IMAGE_BYTES", 20 * 1024 * 1024, "Largest accepted body, bytes")
    max_image_pixels: int = _env("MAX_IMAGE_PIXELS", 40_000_000, "Largest accepted width*height")

    # feature extraction
    clip_model: str = _env("CLIP_MODEL", "ViT-B-32", "open_clip model name")
    clip_pretrained: str = _env("CLIP_PRETRAINED", "openai", "open_clip pretrained tag")
    clip_batch_size: int = _env("CLIP_BATCH_SIZE", 32, "Images per CLIP forward pass in training")
    ocr_langs: str = _env(
        "OCR_LANGS", "",
        "EasyOCR languages, comma-separated; empty = those of the weights folder's recogniser (ru,en when writing weights)",
    )
    ocr_max_side: int = _env(
        "OCR_MAX_SIDE", 640,
        "Longest side an image is downscaled to before OCR (never enlarged); also caps OCR_DETECT_SIDE. Part of the "
        "feature config",
    )
    ocr_max_boxes: int = _env(
        "OCR_MAX_BOXES", 32,
        "Most text boxes recognised per image, the largest first (~0.1 CPU-s each); 0 = all. Part of the feature config",
    )
    ocr_detect_side: int = _env(
        "OCR_DETECT_SIDE", 512,
        "CRAFT sees an image whose longest side is shorter than this enlarged to it (at most to OCR_MAX_SIDE); the "
        "recogniser still reads the image's own pixels; 0 = never enlarge. Part of the feature config",
    )
    ocr_detector: str = _env(
        "OCR_DETECTOR", "auto",
        "CRAFT text detector: auto (int8 on CPU, fp32 on CUDA), int8 (static int8 on ONNX Runtime, calibrated on "
        "rendered text scenes, cached next to the weights; ~2.4-2.8x less CPU per read for <= 1 point of word recall: "
        "ACCURACY.md) or fp32. Part of the feature config",
    )
    ocr_backend: str = _env(
        "OCR_BACKEND", "onnx",
        "Runtime of the fp32 CRAFT detector on CPU (OCR_DETECTOR=fp32): onnx (ONNX Runtime, export cached next to "
        "the weights) or torch; onnx falls back to torch when it cannot run",
    )
    device: str = _env("DEVICE", "auto", "auto, cpu or cuda")
    torch_threads: int = _env("TORCH_THREADS", 0, "torch intra-op threads per worker; 0 = torch default")
    omp_wait_policy: str = _env(
        "OMP_WAIT_POLICY", "PASSIVE",
        "Services: idle OpenMP threads sleep (PASSIVE) rather than spin (ACTIVE); the services share the cores",
    )
    weights_mirror: str = _env(
        "WEIGHTS_MIRROR", "", "Base URL serving the weight files by file name, instead of their origin hosts"
    )

    # dynamic batching in the CLIP services
    batch_max_size: int = _env("BATCH_MAX_SIZE", 16, "Largest dynamic batch")
    batch_max_wait_ms: float = _env(
        "BATCH_MAX_WAIT_MS", 20.0,
        "Longest a batch waits for requests known to be coming; never at concurrency 1 (BENCHMARKS.md)",
    )
    batch_max_slack_ms: float = _env(
        "BATCH_MAX_SLACK_MS", 2000.0,
        "Most a request may wait for batch company when its caller grants slack (X-Batch-Slack-Ms); 0 = ignore it",
    )
    gateway_slack_share: float = _env(
        "GATEWAY_SLACK_SHARE", 0.5,
        "Gateway, under concurrent load: the share of the slowest member's latency granted to clearly faster "
        "members as batching slack; 0 = never",
    )

    # serving
    service_name: str = _env("SERVICE_NAME", "", "Which service this process is")
    drain_seconds: float = _env("DRAIN_SECONDS", 2.0, "After SIGTERM, report not-ready this long before stopping")
    member_urls: str = _env(
        "MEMBER_URLS", "",
        "Gateway: name=url pairs of the members; empty = from the member table (http://127.0.0.1:<port>)",
    )
    bind_host: str = _env("BIND_HOST", "0.0.0.0", "Address the gunicorns listen on (serve uses 127.0.0.1)")
    service_ports: str = _env(
        "SERVICE_PORTS", "",
        "name=port pairs the four services listen on; empty = from the member table (ocr_nb=5000 ... stacking=5003)",
    )
    workers: int = _env("WEB_CONCURRENCY", 1, "gunicorn worker processes per service")
    threads: int = _env(
        "GUNICORN_THREADS", 8, "Predictions running at once per worker in a batching member (CLIP: they share a "
        "batch), and the most UNBATCHED_RUNNING and GATEWAY_RUNNING may be; the worker has more threads than this, "
        "for the admission queue and health",
    )
    admission_queue: int = _env(
        "ADMISSION_QUEUE", 4, "Predictions that may wait for a running slot, per worker; past it 503 + Retry-After",
    )
    admission_wait_predictions: float = _env(
        "ADMISSION_WAIT_PREDICTIONS", 1.0, "How long a queued prediction may wait for a slot, in typical predictions "
        "(at least 1 s): an admitted answer takes at most about twice a prediction's time; 0 = until its deadline",
    )
    unbatched_running: int = _env(
        "UNBATCHED_RUNNING", 2, "A member that reads one image at a time (OCR): predictions running at once per "
        "worker (at most GUNICORN_THREADS); each already uses the cores, more at once only slow each other down",
    )
    gateway_running: int = _env(
        "GATEWAY_RUNNING", 0, "Gateway: predictions fanned out at once per worker (at most GUNICORN_THREADS), about "
        "what the members can compute at once: more only queue inside them (BENCHMARKS.md, Resilience); 0 = this "
        "host's cores (one host: the members share them); set it where members run elsewhere or in replicas",
    )
    metrics_dir: str = _env(
        "PROMETHEUS_MULTIPROC_DIR", "", "Folder for multi-process Prometheus metrics; empty = a fresh temp folder"
    )
    ready_timeout_s: float = _env("SERVE_READY_TIMEOUT_S", 600.0, "serve: how long to wait for all four to be ready")
    member_timeout_s: float = _env("MEMBER_TIMEOUT_S", 10.0, "Gateway: per-member timeout")
    deadline_s: float = _env(
        "GATEWAY_DEADLINE_S", 15.0, "Gateway: overall deadline per request, from its arrival (queue time counts)",
    )
    breaker_failures: int = _env(
        "BREAKER_FAILURES", 3, "Gateway: consecutive failures that eject a member replica (all ejected = breaker open)",
    )
    breaker_cooloff_s: float = _env(
        "BREAKER_COOLOFF_S", 5.0, "Gateway: an ejected replica's first cool-off before its readiness probe; doubles "
        "while it keeps failing (up to 60 s)",
    )
    resolve_every_s: float = _env(
        "RESOLVE_EVERY_S", 5.0, "Gateway: how often member host names are resolved to their replicas' addresses",
    )

    # API keys (off unless a key is set)
    api_keys: str = _env(
        "API_KEYS", "",
        "Comma-separated API keys; when set (or API_KEY_FILE), predict, infer, model metadata, history and its page "
        "need `Authorization: Bearer <key>` or `X-API-Key`; empty = no keys",
    )
    api_key_file: str = _env("API_KEY_FILE", "", "File of API keys, one a line (# comments); adds to API_KEYS")
    metrics_require_key: bool = _env("METRICS_REQUIRE_KEY", False, "/metrics also needs a key (when keys are on)")
    gateway_member_key: str = _env(
        "GATEWAY_MEMBER_KEY", "", "Gateway: the key it sends to the members; empty = the first of its own keys",
    )

    # response cache (gateway)
    cache_max_entries: int = _env(
        "CACHE_MAX_ENTRIES", 0, "Gateway response cache: most answers kept per worker; 0 = off (the default)",
    )
    cache_max_bytes: int = _env(
        "CACHE_MAX_BYTES", 16 * 1024 * 1024, "Gateway response cache: most bytes (of JSON) kept per worker",
    )
    cache_ttl_s: float = _env("CACHE_TTL_S", 600.0, "Gateway response cache: seconds an answer is kept; 0 = off")

    # prediction history (gateway)
    history_enabled: bool = _env("HISTORY_ENABLED", True, "Record every gateway prediction")
    history_db: Path = _env("HISTORY_DB", Path("models/history.sqlite3"), "SQLite file of the history")
    history_keep_images: bool = _env("HISTORY_KEEP_IMAGES", False, "Also store the full image")
    history_retention_days: int = _env("HISTORY_RETENTION_DAYS", 90, "Delete records older than this; 0 = keep")
    history_max_rows: int = _env("HISTORY_MAX_ROWS", 100_000, "Keep at most this many records; 0 = no cap")

    def member_url_map(self) -> dict[str, str]:
        """MEMBER_URLS parsed into {name: base_url}; empty: each member of the table at 127.0.0.1:<its port>."""
        if not self.member_urls.strip():
            return {name: f"http://{LOCAL_HOST}:{members.service(name).port}" for name in members.member_names()}
        pairs = (item.split("=", 1) for item in self.member_urls.split(",") if item.strip())
        return {name.strip(): url.strip().rstrip("/") for name, url in pairs}

    def port_map(self) -> dict[str, int]:
        """SERVICE_PORTS parsed into {name: port}; empty: the ports of the member table."""
        if not self.service_ports.strip():
            return {spec.name: spec.port for spec in members.services()}
        pairs = (item.split("=", 1) for item in self.service_ports.split(",") if item.strip())
        return {name.strip(): int(port) for name, port in pairs}

    def ocr_lang_list(self) -> list[str]:
        return [lang.strip() for lang in self.ocr_langs.split(",") if lang.strip()]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build from the environment (default os.environ), then apply keyword overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is not None and raw != "":
                values[f.name] = _coerce(raw, type(f.default), f.metadata["env"])
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (the inverse of from_env)."""
        return {f.metadata["env"]: _to_text(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _coerce(raw: str, kind: type, name: str) -> Any:
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name} must be one of 1/0/true/false/yes/no/on/off, got {raw!r}")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from exc
