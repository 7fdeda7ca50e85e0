"""VersionedRuntime: a service holding several model versions at once and following serving.json.

Every worker of every service reads MODELS_DIR/serving.json at start and every MODEL_POLL_S. It loads and warms the
versions the file wants (repository.ServingState.wanted), answers un-pinned requests with the active one, and drops
the versions no longer wanted; requests already running on a dropped version finish on it (they hold it). A
version that fails to load is UNAVAILABLE with the reason (the file that failed its check, ...), and the version
that was serving stays. `switch_ready` lets the gateway wait for its members before it answers with a new version.
"""
from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared import repository
from shared.errors import ArtifactError, VersionNotLoaded
from shared.serving import observability
from shared.serving.runtime import ModelRuntime

log = logging.getLogger(__name__)


class SlotState(StrEnum):
    """A version's state in one service (Triton's repository index says the same)."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class Slot:
    """One version in this process: its model once READY, else why not."""

    version: str
    state: SlotState
    model: Any = None
    reason: str = ""


class VersionedRuntime(ModelRuntime):
    """A ModelRuntime whose model is one of several loaded versions; subclasses load and warm one version."""

    def __init__(self, name: str, settings: Any):
        super().__init__(name, settings)
        self.slots: dict[str, Slot] = {}
        self.active: str | None = None
        self.serving = repository.ServingState()  # the serving state last acted on
        self.sync_error = ""
        self.converged = True  # False while a switch waits (the watcher then retries every poll)
        self._lock = threading.RLock()  # slots and active
        self._sync_lock = threading.Lock()  # one sync at a time (the watcher, a test, the gateway's API)
        self._stop = threading.Event()

    @abstractmethod
    def load_version(self, version: str, folder: Path) -> Any:
        """Load one version from its folder, verified; what `model_for` hands out."""

    @abstractmethod
    def warm_version(self, model: Any) -> None:
        """One inference through a freshly loaded version."""

    def switch_ready(self, version: str) -> str:
        """'' when this service may answer with `version` now, else what it waits for (the gateway: its members)."""
        return ""

    # ModelRuntime's interface: load() is the first sync, warm_up() starts following serving.json.
    def load(self) -> Any:
        root = Path(self.settings.models_dir)
        state = repository.read_state(root)
        if state.active is None:
            found = "has versions but none is active" if repository.is_repository(root) else \
                f"has no model to serve (no {root / 'manifest.json'}, no versions/)"
            raise ArtifactError(f"{root} {found}: train one (python -m shared train --out {root}) or activate a "
                                "version (python -m shared models activate <version>).")
        self.serving = state
        slot = self._load(state.active, root)
        if slot.state != SlotState.READY:
            raise ArtifactError(slot.reason)
        for version in self._bounded(state.wanted()):
            if version != state.active:
                self._load(version, root)
        start = self._starting_version(state)
        with self._lock:
            self.active = start
        self.converged = start == state.active
        return self.slots[start].model

    def _starting_version(self, state: repository.ServingState) -> str:
        """The active version, unless this service must wait to answer with it (the gateway, while its members
        still load it) and the version before it is ready here: start on that one, switch when they are."""
        if not self.switch_ready(state.active):
            return state.active
        ready = [v for v in state.previous if v in self.slots and self.slots[v].state == SlotState.READY]
        return next((v for v in ready if not self.switch_ready(v)), state.active)

    def warm_up(self) -> None:
        """Versions are warmed as they load."""

    def load_and_warm_up(self) -> None:
        """Load and warm up, then follow serving.json, even after a failed load: a rollback heals it."""
        super().load_and_warm_up()
        if self.settings.model_poll_s > 0:
            threading.Thread(target=self._watch, name=f"versions-{self.name}", daemon=True).start()

    # Requests
    def model_for(self, version: str | None = None) -> tuple[str, Any]:
        """(version, model): the pinned version if it is loaded, else the active one; VersionNotLoaded (409)
        naming what is loaded when the pinned one is not."""
        self.require_loaded()
        with self._lock:
            wanted = version or self.active
            slot = self.slots.get(wanted) if wanted else None
            if slot is None or slot.state != SlotState.READY:
                loaded = ", ".join(v for v, s in self.slots.items() if s.state == SlotState.READY) or "none"
                observability.VERSION_REFUSALS.labels(self.name).inc()
                state = f" (it is {slot.state.value}{': ' + slot.reason if slot.reason else ''})" if slot else ""
                raise VersionNotLoaded(f"{self.name} does not hold version {wanted!r} loaded{state}; "
                                       f"loaded: {loaded}.")
            return wanted, slot.model

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return [v for v, s in self.slots.items() if s.state == SlotState.READY]

    def index(self) -> list[dict]:
        """Triton's repository index for this service: one entry per version it holds or tried to."""
        with self._lock:
            return [{"name": self.name, "version": v, "state": s.state.value, "reason": s.reason,
                     "active": v == self.active} for v, s in self.slots.items()]

    # Following serving.json
    def sync(self, state: repository.ServingState | None = None) -> bool:
        """Converge on `state` (default: serving.json now); True when done, False while a switch waits."""
        root = Path(self.settings.models_dir)
        with self._sync_lock:
            state = state or repository.read_state(root)
            wanted = self._bounded(state.wanted())
            fresh = state.stamp != self.serving.stamp
            for version in wanted:
                slot = self.slots.get(version)
                if slot is None or (fresh and slot.state == SlotState.UNAVAILABLE):
                    self._load(version, root)
            done = self._maybe_switch(state.active)
            self._drop(set(wanted))
            self.serving, self.converged = state, done
            return done

    def _maybe_switch(self, version: str | None) -> bool:
        if version is None or version == self.active:
            return True
        slot = self.slots.get(version)
        if slot is None or slot.state != SlotState.READY:
            return slot is not None and slot.state == SlotState.UNAVAILABLE  # a failed load: stay, nothing to wait for
        waiting = self.switch_ready(version)
        if waiting:
            slot.reason = f"waiting: {waiting}"
            return False
        with self._lock:
            old, self.active, self.model = self.active, version, slot.model
            slot.reason = ""
        if old is None:  # the first load failed; this version serves now
            self.health.mark_recovered()
        observability.VERSION_SWITCHES.labels(self.name).inc()
        log.info("%s now answers with version %s (was %s)", self.name, version, old)
        return True

    def _drop(self, wanted: set[str]) -> None:
        with self._lock:
            for version in [v for v in self.slots if v not in wanted and v != self.active]:
                del self.slots[version]  # requests running on it hold the model; it is freed after them
                log.info("%s unloaded version %s", self.name, version)

    def _bounded(self, versions: tuple[str, ...]) -> tuple[str, ...]:
        """At most MODEL_VERSIONS_LOADED, the active one and the candidates first (as `wanted` orders them)."""
        return versions[:self.settings.model_versions_loaded]

    def _load(self, version: str, root: Path) -> Slot:
        with self._lock:
            slot = self.slots[version] = Slot(version, SlotState.LOADING)
        try:
            folder = repository.version_dir(root, version)
            if repository.manifest_version(folder) != version:
                raise ArtifactError(f"{folder} holds version {repository.manifest_version(folder)}, not {version}: "
                                    "its folder was renamed or its manifest replaced.")
            model = self.load_version(version, folder)
            self.warm_version(model)
        except Exception as exc:  # noqa: BLE001 - any failure leaves this version unavailable, the others serving
            log.warning("%s could not load version %s: %s", self.name, version, exc)
            reason = exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"
            with self._lock:
                slot.state, slot.reason = SlotState.UNAVAILABLE, reason
            return slot
        with self._lock:
            slot.model, slot.state = model, SlotState.READY
        log.info("%s loaded version %s", self.name, version)
        return slot

    def _watch(self) -> None:
        root = Path(self.settings.models_dir)
        while not self._stop.wait(self.settings.model_poll_s):
            try:
                state = repository.read_state(root)
                if not self.converged or state.stamp != self.serving.stamp:
                    self.sync(state)
                self.sync_error = ""
            except Exception as exc:  # noqa: BLE001 - a bad serving.json must not stop the service answering
                if str(exc) != self.sync_error:
                    log.warning("%s cannot follow %s: %s", self.name, root / repository.POINTER, exc)
                self.sync_error = str(exc)
