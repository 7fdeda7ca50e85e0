"""Settings: one typed object, read from the environment. Nothing else reads os.environ.

Built on pydantic-settings: each field names its variable (its validation alias), its default, its bounds and what
it means; the docs table is generated from them (`python -m shared settings --markdown`). `Settings(...)` takes
only what it is given; `Settings.from_env()` reads the environment. Any bad value, from either, raises one
SettingsError naming every bad variable, the value received and what was expected.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared import members
from shared.errors import SettingsError

# Where the member table's services are found when MEMBER_URLS is empty: all on this host (`python -m shared serve`).
LOCAL_HOST = "127.0.0.1"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
FLAG_WORDS = "1/0/true/false/yes/no/on/off"
HISTORY_URL_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")


def _flag(value: Any) -> Any:
    """A boolean variable: exactly 1/0/true/false/yes/no/on/off (any case); pydantic alone also takes t/f/y/n."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in TRUE_WORDS:
        return True
    if value.strip().lower() in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {FLAG_WORDS}")


def _wait_policy(value: Any) -> Any:
    """OpenMP reads OMP_WAIT_POLICY in any case; anything else stays as given, for the error message."""
    return value.strip().upper() if isinstance(value, str) and value.strip().upper() in ("PASSIVE", "ACTIVE") else value


Flag = Annotated[bool, BeforeValidator(_flag)]
OmpWaitPolicy = Annotated[Literal["PASSIVE", "ACTIVE"], BeforeValidator(_wait_policy)]


def _var(name: str, default: Any, doc: str, accepts: str | None = None, **bounds: Any) -> Any:
    """A field read from the environment variable `name`; bounds are pydantic's (ge, gt, le, allow_inf_nan);
    `accepts` words the values for the docs where the type alone does not (a list, pairs)."""
    extra = {"accepts": accepts} if accepts else None
    return Field(default, validation_alias=name, description=doc, json_schema_extra=extra, **bounds)


def _finite(name: str, default: float, doc: str, **bounds: Any) -> Any:
    """A float field that refuses inf and nan (a timeout of nan would compare false everywhere)."""
    return _var(name, default, doc, allow_inf_nan=False, **bounds)


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    """'a=x, b=y' as [(a, x), (b, y)]; ValueError naming the first malformed item or a name given twice."""
    pairs: list[tuple[str, str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (piece.strip() for piece in item.partition("="))
        if not (sep and name and value):
            raise ValueError(f"expected comma-separated {what} pairs; {item!r} is not one")
        pairs.append((name, value))
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        raise ValueError(f"expected each name once; {sorted({n for n in names if names.count(n) > 1})} repeat")
    return pairs


def _check_url(url: str) -> str:
    """The URL of a member: http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host; {url!r} is not one")
    return url


def _check_port(port: str) -> int:
    """A TCP port number, from its text."""
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port number 1-65535; {port!r} is not one")
    return int(port)


class Settings(BaseSettings):
    """Every tunable, with its environment variable and documented default."""

    # Immutable and hashable; variables exactly as spelled; an empty variable means its default; keyword
    # arguments by field name (Settings(workers=2)); an unknown one is an error.
    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True,
                                      validate_by_name=True, validate_by_alias=True, extra="forbid")

    datasets_dir: Path = _var("DATASETS_DIR", Path("../shared/datasets"), "Read-only datasets folder")
    models_dir: Path = _var("MODELS_DIR", Path("models"), "Trained artifacts")
    weights_dir: Path = _var("WEIGHTS_DIR", Path("models/weights"), "CLIP and EasyOCR weights")
    cache_dir: Path = _var("FEATURE_CACHE_DIR", Path("models/cache"), "Feature cache")

    # model versions (repository.py: MODELS_DIR/versions/<version>/ and serving.json)
    model_poll_s: float = _finite(
        "MODEL_POLL_S", 1.0, "How often every service reads `MODELS_DIR/serving.json` to follow the active version, "
        "candidates and loaded versions; 0 = only at start", ge=0,
    )
    model_versions_loaded: int = _var(
        "MODEL_VERSIONS_LOADED", 3, "Most model versions one service holds loaded at once (the active one, the one "
        "before it for an instant rollback, a canary or shadow); versions that record the same extractor share it",
        ge=1,
    )
    model_load_timeout_s: float = _finite(
        "MODEL_LOAD_TIMEOUT_S", 300.0, "`models activate` and the repository API: how long to wait for every service "
        "to load and warm a version before giving up (the old version keeps serving)", gt=0,
    )
    shadow_workers: int = _var(
        "SHADOW_WORKERS", 2, "Gateway: threads per worker asking the shadow version (off the response path)", ge=1,
    )
    shadow_queue: int = _var(
        "SHADOW_QUEUE", 16, "Gateway: copies for the shadow version waiting or running per worker; beyond it they "
        "are dropped, counted (classifier_shadow_requests_total{outcome=\"dropped\"})", ge=1,
    )
    models_url: str = _var(
        "MODELS_GATEWAY_URL", "http://127.0.0.1:5003", "`python -m shared models`: the gateway whose repository index "
        "it watches while a version loads; unreachable = only serving.json is written",
    )

    # image limits (shared by training and serving)
    max_image_bytes: int = _var("MAX_IMAGE_BYTES", 20 * 1024 * 1024, "Largest accepted body, bytes", gt=0)
    max_image_pixels: int = _var("MAX_IMAGE_PIXELS", 40_000_000, "Largest accepted width*height", gt=0)

    # feature extraction
    clip_model: str = _var("CLIP_MODEL", "ViT-B-32", "open_clip model name")
    clip_pretrained: str = _var("CLIP_PRETRAINED", "openai", "open_clip pretrained tag")
    clip_batch_size: int = _var("CLIP_BATCH_SIZE", 32, "Images per CLIP forward pass in training", ge=1)
    ocr_langs: str = _var(
        "OCR_LANGS", "",
        "EasyOCR languages, comma-separated; empty = those of the weights folder's recogniser (ru,en when writing weights)",
        accepts="language codes, comma-separated",
    )
    ocr_max_side: int = _var(
        "OCR_MAX_SIDE", 640,
        "Longest side an image is downscaled to before OCR (never enlarged); also caps OCR_DETECT_SIDE. Part of the "
        "feature config", ge=1,
    )
    ocr_max_boxes: int = _var(
        "OCR_MAX_BOXES", 32,
        "Most text boxes recognised per image, the largest first (~0.1 CPU-s each); 0 = all. Part of the feature config",
        ge=0,
    )
    ocr_detect_side: int = _var(
        "OCR_DETECT_SIDE", 512,
        "CRAFT sees an image whose longest side is shorter than this enlarged to it (at most to OCR_MAX_SIDE); the "
        "recogniser still reads the image's own pixels; 0 = never enlarge. Part of the feature config", ge=0,
    )
    ocr_detector: Literal["auto", "int8", "fp32"] = _var(
        "OCR_DETECTOR", "auto",
        "CRAFT text detector: auto (int8 on CPU, fp32 on CUDA), int8 (static int8 on ONNX Runtime, calibrated on "
        "rendered text scenes, cached next to the weights; ~2.4-2.8x less CPU per read for <= 1 point of word recall: "
        "ACCURACY.md) or fp32. Part of the feature config",
    )
    ocr_backend: Literal["onnx", "torch"] = _var(
        "OCR_BACKEND", "onnx",
        "Runtime of the fp32 CRAFT detector on CPU (OCR_DETECTOR=fp32): onnx (ONNX Runtime, export cached next to "
        "the weights) or torch; onnx falls back to torch when it cannot run",
    )
    device: Literal["auto", "cpu", "cuda"] = _var("DEVICE", "auto", "auto (CUDA when available), cpu or cuda")
    torch_threads: int = _var("TORCH_THREADS", 0, "torch intra-op threads per worker; 0 = torch default", ge=0)
    omp_wait_policy: OmpWaitPolicy = _var(
        "OMP_WAIT_POLICY", "PASSIVE",
        "Services: idle OpenMP threads sleep (PASSIVE) rather than spin (ACTIVE); the services share the cores",
    )
    weights_mirror: str = _var(
        "WEIGHTS_MIRROR", "", "Base URL serving the weight files by file name, instead of their origin hosts"
    )

    # dynamic batching in the CLIP services
    batch_max_size: int = _var("BATCH_MAX_SIZE", 16, "Largest dynamic batch", ge=1)
    batch_max_wait_ms: float = _finite(
        "BATCH_MAX_WAIT_MS", 20.0,
        "Longest a batch waits for requests known to be coming; never at concurrency 1 (BENCHMARKS.md)", ge=0,
    )
    batch_max_slack_ms: float = _finite(
        "BATCH_MAX_SLACK_MS", 2000.0,
        "Most a request may wait for batch company when its caller grants slack (X-Batch-Slack-Ms); 0 = ignore it",
        ge=0,
    )
    gateway_slack_share: float = _finite(
        "GATEWAY_SLACK_SHARE", 0.5,
        "Gateway, under concurrent load: the share of the slowest member's latency granted to clearly faster "
        "members as batching slack; 0 = never", ge=0, le=1,
    )

    # serving
    service_name: str = _var("SERVICE_NAME", "", "Which service this process is")
    drain_seconds: float = _finite(
        "DRAIN_SECONDS", 2.0,
        "After SIGTERM, report not-ready this long (still answering, each answer with `Connection: close`) before "
        "stopping", ge=0,
    )
    member_urls: str = _var(
        "MEMBER_URLS", "",
        "Gateway: name=url pairs of the members; empty = from the member table (http://127.0.0.1:<port>)",
        accepts="`name=url` pairs (http or https), comma-separated",
    )
    bind_host: str = _var("BIND_HOST", "0.0.0.0", "Address the gunicorns listen on (serve uses 127.0.0.1)")
    service_ports: str = _var(
        "SERVICE_PORTS", "",
        "name=port pairs the four services listen on; empty = from the member table (ocr_nb=5000 ... stacking=5003)",
        accepts="`name=port` pairs (1-65535), comma-separated",
    )
    workers: int = _var("WEB_CONCURRENCY", 1, "gunicorn worker processes per service", ge=1)
    threads: int = _var(
        "GUNICORN_THREADS", 8, "Predictions running at once per worker in a batching member (CLIP: they share a "
        "batch), and the most `UNBATCHED_RUNNING` and `GATEWAY_RUNNING` may be; the worker has this + "
        "`ADMISSION_QUEUE` + 4 threads, the last 4 never taken by predictions (health, metrics)", ge=1,
    )
    admission_queue: int = _var(
        "ADMISSION_QUEUE", 4,
        "Predictions that may wait for a running slot, per worker; past it 503 + `Retry-After` at once", ge=0,
    )
    admission_wait_predictions: float = _finite(
        "ADMISSION_WAIT_PREDICTIONS", 1.0, "How long a queued prediction may wait for a slot, in typical predictions "
        "(at least 1 s): an admitted answer takes at most about twice a prediction's time; 0 = until its deadline",
        ge=0,
    )
    unbatched_running: int = _var(
        "UNBATCHED_RUNNING", 2, "A member that reads one image at a time (OCR): predictions running at once per "
        "worker (at most `GUNICORN_THREADS`); each read already uses the cores, more at once only slow each other "
        "down", ge=1,
    )
    gateway_running: int = _var(
        "GATEWAY_RUNNING", 0, "Gateway: predictions fanned out at once per worker (at most `GUNICORN_THREADS`), about "
        "what the members can compute at once: more only queue inside them (BENCHMARKS.md, Resilience); 0 = this "
        "host's cores (right when the members share the host); set it where members run elsewhere or in replicas",
        ge=0,
    )
    metrics_dir: str = _var(
        "PROMETHEUS_MULTIPROC_DIR", "", "Folder for multi-process Prometheus metrics; empty = a fresh temp folder"
    )
    ready_timeout_s: float = _finite(
        "SERVE_READY_TIMEOUT_S", 600.0, "serve: how long to wait for all four to be ready", gt=0,
    )
    member_timeout_s: float = _finite("MEMBER_TIMEOUT_S", 10.0, "Gateway: per-member timeout", gt=0)
    deadline_s: float = _finite(
        "GATEWAY_DEADLINE_S", 15.0, "Every service: overall deadline per request, from its arrival in the worker "
        "(queue time counts); also the longest a prediction waits for a slot or a restarting model", gt=0,
    )
    breaker_failures: int = _var(
        "BREAKER_FAILURES", 3,
        "Gateway: consecutive failures that eject a member replica (all ejected = the member's breaker open)", ge=1,
    )
    breaker_cooloff_s: float = _finite(
        "BREAKER_COOLOFF_S", 5.0, "Gateway: an ejected replica's first cool-off before its readiness probe; doubles "
        "while it keeps failing (up to 60 s)", gt=0,
    )
    resolve_every_s: float = _finite(
        "RESOLVE_EVERY_S", 5.0, "Gateway: how often member host names are resolved to their replicas' addresses", gt=0,
    )

    # API keys (off unless a key is set)
    api_keys: str = _var(
        "API_KEYS", "",
        "Comma-separated API keys; when set (or `API_KEY_FILE`), predict, infer, model metadata, history and its page "
        "need `Authorization: Bearer <key>` or `X-API-Key: <key>`; empty = no keys",
        accepts="keys, comma-separated",
    )
    api_key_file: str = _var("API_KEY_FILE", "", "File of API keys, one a line (# comments); adds to `API_KEYS`")
    metrics_require_key: Flag = _var("METRICS_REQUIRE_KEY", False, "`/metrics` also needs a key (when keys are on)")
    gateway_member_key: str = _var(
        "GATEWAY_MEMBER_KEY", "", "Gateway: the key it sends to the members; empty = the first of its own keys",
    )
    admin_keys: str = _var(
        "ADMIN_KEYS", "", "Comma-separated admin keys for the model repository routes (load, unload, canary, "
        "shadow); with no key at all, those routes answer only a service bound to loopback (`serve`)",
        accepts="keys, comma-separated",
    )

    # response cache (gateway)
    cache_max_entries: int = _var(
        "CACHE_MAX_ENTRIES", 0, "Gateway response cache: most answers kept per worker; 0 = off (the default)", ge=0,
    )
    cache_max_bytes: int = _var(
        "CACHE_MAX_BYTES", 16 * 1024 * 1024, "Gateway response cache: most bytes (of JSON) kept per worker", ge=0,
    )
    cache_ttl_s: float = _finite(
        "CACHE_TTL_S", 600.0, "Gateway response cache: seconds an answer is kept; 0 = off", ge=0,
    )

    # prediction history (gateway)
    history_enabled: Flag = _var("HISTORY_ENABLED", True, "Record every gateway prediction")
    history_db: str = _var(
        "HISTORY_DB", "models/history.sqlite3", "Where the history lives: a SQLite file (one gateway), or a "
        "`postgresql://user:password@host:5432/db` URL that every gateway replica shares (docs/history.md)",
    )
    history_db_file: str = _var(
        "HISTORY_DB_FILE", "", "A file holding the HISTORY_DB value (a Docker or Kubernetes secret, so the password "
        "is in no environment); when set it wins over HISTORY_DB",
    )
    history_keep_images: Flag = _var("HISTORY_KEEP_IMAGES", False, "Also store the full image")
    history_retention_days: int = _var(
        "HISTORY_RETENTION_DAYS", 90, "Delete records older than this; 0 = keep", ge=0,
    )
    history_max_rows: int = _var("HISTORY_MAX_ROWS", 100_000, "Keep at most this many records; 0 = no cap", ge=0)
    history_pending_images: int = _var(
        "HISTORY_PENDING_IMAGES", 2000, "Without HISTORY_KEEP_IMAGES: keep the full images of this many of the newest "
        "unlabelled records, so that a label can still export its photo (a labelled record keeps its image); "
        "0 = none", ge=0,
    )

    history_retry_s: float = _finite(
        "HISTORY_RETRY_S", 60.0, "While the history database refuses writes (down, restarting), how long a batch of "
        "records is retried with backoff before it is dropped and counted; up to 1,000 more wait meanwhile", ge=0,
    )

    # the loop: labels, review queue, live quality, drift (gateway)
    drift_window: int = _var("DRIFT_WINDOW", 200, "Drift tests: answers per window", ge=10, le=10_000)
    drift_windows: int = _var("DRIFT_WINDOWS", 5, "Drift tests: how many of the newest full windows to test", ge=1,
                              le=100)
    drift_alpha: float = _finite("DRIFT_ALPHA", 0.01, "Drift tests: a window is flagged when a test's p-value, "
                                 "Bonferroni-corrected over the tests, is below this", gt=0, lt=1)
    drift_reference: Literal["traffic", "training"] = _var(
        "DRIFT_REFERENCE", "traffic", "Drift tests: compare the members' answers with the first DRIFT_WINDOW answers the "
        "model version served (`traffic`), or with their out-of-fold answers on the training photos (`training`: "
        "a new photo session alone is flagged, ACCURACY.md); the answered classes are always tested against the "
        "training photos' shares",
    )
    loop_metrics_every_s: float = _finite(
        "LOOP_METRICS_EVERY_S", 60.0, "/metrics recomputes the live quality and drift gauges at most this often, in "
        "each worker", ge=0,
    )

    # bulk jobs (classify-batch, train --engine ray)
    ray_address: str = _var(
        "RAY_ADDRESS", "", "classify-batch and `train --engine ray`: an existing Ray cluster (its head's `host:6379`, "
        "or `ray://host:10001` with ray[client]); empty = a local Ray started in-process on this machine")
    feature_engine: Literal["serial", "ray"] = _var(
        "FEATURE_ENGINE", "serial", "How train and evaluate extract missing features: serial (this process) or ray "
        "(the bulk pipeline's actor pool, on RAY_ADDRESS or a local Ray); `--engine` sets it")
    bulk_actors: int = _var(
        "BULK_ACTORS", 0, "Bulk jobs: feature actors (each holds every extractor, one CPU); 0 = one per CPU of the "
        "cluster", ge=0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_describe(exc, type(self).env_names())) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the keyword arguments: Settings() never reads the environment by itself (from_env does)."""
        return (init_settings,)

    @field_validator("member_urls")
    @classmethod
    def _member_urls_are_pairs(cls, text: str) -> str:
        for _, url in _pairs(text, "name=url"):
            _check_url(url)
        return text

    @field_validator("history_db", mode="before")
    @classmethod
    def _history_db_is_a_file_or_postgresql(cls, value: Any) -> Any:
        # Any other URL would become a relative folder named "mysql:" holding a SQLite file, silently.
        scheme = str(value).partition("://")[0] if "://" in str(value) else ""
        if scheme and scheme not in HISTORY_URL_SCHEMES:
            raise ValueError(f"a SQLite file path or a {' / '.join(HISTORY_URL_SCHEMES)}:// URL, not {scheme}://")
        return str(value)

    @field_validator("service_ports")
    @classmethod
    def _service_ports_are_pairs(cls, text: str) -> str:
        for _, port in _pairs(text, "name=port"):
            _check_port(port)
        return text

    def member_url_map(self) -> dict[str, str]:
        """MEMBER_URLS parsed into {name: base_url}; empty: each member of the table at 127.0.0.1:<its port>."""
        if not self.member_urls.strip():
            return {name: f"http://{LOCAL_HOST}:{members.service(name).port}" for name in members.member_names()}
        return {name: url.rstrip("/") for name, url in _pairs(self.member_urls, "name=url")}

    def port_map(self) -> dict[str, int]:
        """SERVICE_PORTS parsed into {name: port}; empty: the ports of the member table."""
        if not self.service_ports.strip():
            return {spec.name: spec.port for spec in members.services()}
        return {name: _check_port(port) for name, port in _pairs(self.service_ports, "name=port")}

    def ocr_lang_list(self) -> list[str]:
        """OCR_LANGS as a list, blanks dropped."""
        return [lang.strip() for lang in self.ocr_langs.split(",") if lang.strip()]

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """{field name: its environment variable}, in declaration order."""
        return {name: str(info.validation_alias) for name, info in cls.model_fields.items()}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build from the environment (default os.environ), then apply keyword overrides."""
        env = os.environ if env is None else env
        read = {name: env[variable] for name, variable in cls.env_names().items() if env.get(variable)}  # "" = unset
        return cls(**{**read, **overrides})

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (the inverse of from_env)."""
        return {variable: _to_text(getattr(self, name)) for name, variable in self.env_names().items()}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed, validated like a new one."""
        return type(self)(**{**{name: getattr(self, name) for name in self.env_names()}, **changes})


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def redact_url(text: str) -> str:
    """A URL with its password replaced by ***: what logs and error messages may show of a database URL."""
    # Up to the last "@": a password holding an unencoded "@" or "/" is hidden whole (more hidden, never less).
    return re.sub(r"(://[^/:@]*:).*@", r"\1***@", text)


def _describe(exc: ValidationError, env_names: Mapping[str, str]) -> str:
    """One line per bad variable: its name, the value received and what was expected."""
    lines = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else ""
        expected = error["msg"].removeprefix("Value error, ")
        value = redact_url(error["input"]) if isinstance(error["input"], str) else error["input"]
        lines.append(f"  {env_names.get(key, key)}={value!r}: {expected}")
    return "invalid settings (environment variables; docs/configuration.md lists them):\n" + "\n".join(lines)
