"""ModelRuntime: the one model base of every service: load() once, predict() many times, readiness as a flag."""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, TypeVar

from flask import Flask, current_app

from shared.config import Settings
from shared.errors import NotReady
from shared.serving import observability
from shared.weights import parts_note

log = logging.getLogger(__name__)

_EXTENSION = "runtime"  # this app's ModelRuntime, in app.extensions
R = TypeVar("R", bound="ModelRuntime")


class ModelRuntime(ABC):
    """A model behind HTTP; a service plugs in by subclassing (MLServer's MLModel shape).

    `start()` runs `load()` then `warm_up()` once, in a thread so that liveness answers at once; until both
    are done, or if either fails, the runtime is not ready and /v2/health/ready shows why.
    """

    # What a request sees while the model loads; `{name}` is the service's name.
    LOADING_MESSAGE = "{name} is still loading its model"

    def __init__(self, name: str, settings: Settings):
        self.name = name
        self.settings = settings
        self.health = observability.Health()
        self.model: Any = None  # what load() returned; None until then

    @property
    def ready(self) -> bool:
        """Loaded, warmed up and not draining."""
        return self.health.ready

    def start(self, background: bool = True) -> None:
        """Load and warm up, in a daemon thread unless `background` is False."""
        if not background:
            self.load_and_warm_up()
            return
        threading.Thread(target=self.load_and_warm_up, name=f"load-{self.name}", daemon=True).start()

    def load_and_warm_up(self) -> None:
        """load(), then warm_up(); any failure keeps the runtime not-ready, with the error in its health."""
        try:
            self.model = self.load()
            self.health.mark_loaded()
            self.warm_up()
            self.health.mark_warmed_up()
            log.info("%s ready (model_version %s; %s)", self.name, self.model_version,
                     parts_note(self.weights) or "weights: not recorded")
        except Exception as exc:  # noqa: BLE001 - any load failure must show in /v2/health/ready
            log.exception("%s failed to load", self.name)
            self.health.mark_failed(f"{type(exc).__name__}: {exc}")

    def require_loaded(self) -> Any:
        """The loaded model; NotReady (503) while it loads or after its load failed."""
        if self.model is None:
            reason = f" Loading failed: {self.health.error}" if self.health.error else ""
            loading = self.LOADING_MESSAGE.format(name=self.name)
            raise NotReady(f"{loading}; retry shortly.{reason}")
        return self.model

    def running_slots(self) -> int:
        """Predictions that may run at once per worker (admission.py); the rest wait or are refused."""
        return self.settings.threads

    @abstractmethod
    def load(self) -> Any:
        """Read the model from disk, verified; returns what require_loaded() will hand out."""

    @abstractmethod
    def warm_up(self) -> None:
        """Run one inference, so that the first request does not pay for lazy initialisation."""

    @abstractmethod
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """One prediction (the subclass defines its input)."""

    @abstractmethod
    def metadata(self) -> dict:
        """What /v2/models/<name> reports."""

    @property
    def weights(self) -> dict[str, str]:
        """{part: "real"|"synthetic"} of the weights behind this service's answers (once loaded)."""
        return {}

    @property
    @abstractmethod
    def model_version(self) -> str:
        """The loaded model's version (from the manifest)."""


def init_app(app: Flask, runtime: ModelRuntime) -> None:
    """Make `runtime` this app's model (read back with current_runtime)."""
    app.extensions[_EXTENSION] = runtime


def current_runtime(kind: type[R] = ModelRuntime) -> R:  # type: ignore[assignment]
    """The current app's runtime, checked to be a `kind` (LearnerRuntime, GatewayRuntime, ...)."""
    runtime = current_app.extensions[_EXTENSION]
    if not isinstance(runtime, kind):
        raise TypeError(f"This app serves a {type(runtime).__name__}, not a {kind.__name__}")
    return runtime
