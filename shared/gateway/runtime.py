"""GatewayRuntime: the gateway's model, the meta-ensemble over the members' probabilities. Never imports torch."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from shared.config import Settings
from shared.learning.reference import Reference, load_reference
from shared.members import GATEWAY
from shared.serving.versions import SlotState, VersionedRuntime
from shared.weights import manifest_parts


def _usable_cores() -> int:
    """The cores this process may run on (its affinity; all of them where the platform cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class LoadedStack:
    """One version of the stack: its meta-models, verified manifest and training reference."""

    ensemble: Any
    manifest: dict
    reference: Reference | None  # what the model keeps of its training data (None: older model)

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def classes(self) -> list[str]:
        return self.ensemble.classes

    @property
    def weights(self) -> dict[str, str]:
        """{part: "real"|"synthetic"} of every feature kind the stack was trained on."""
        return manifest_parts(self.manifest)

    def combine(self, probas: Mapping[str, Mapping[str, float]]) -> np.ndarray:
        """Stacked (K,) probabilities from {member: {class: p}} of the members that answered, by the meta-model
        for exactly them."""
        rows = {name: np.asarray([p[c] for c in self.classes], dtype=float) for name, p in probas.items()}
        return self.ensemble.combine(rows)

    def member_weights(self, name: str) -> dict[str, str]:
        """The parts behind one member's answers, as the manifest records them (for a member that does not say)."""
        kind = self.manifest.get("learner_features", {}).get(name)
        return {kind: self.weights[kind]} if kind in self.weights else {}

    def seen_in_training(self, sha256: str) -> bool:
        """Whether the model was trained or tested on this image (its label is then no new evidence)."""
        return self.reference is not None and sha256 in self.reference.images


class GatewayRuntime(VersionedRuntime):
    """The meta-models (one per subset of members) of every loaded version; the active one answers unless a request
    pins another or is the canary's. A new active version is switched to only once every member holds it."""

    LOADING_MESSAGE = "The gateway is still loading its meta-models"

    def __init__(self, settings: Settings):
        super().__init__(GATEWAY, settings)
        # {member: [{"replica", "entries" | "error"}]}: the members' repository indexes (set by gateway/app.py).
        self.member_indexes: Callable[[], dict[str, list[dict]]] = lambda: {}
        self.candidates_ready: set[str] = set()  # canary/shadow versions every member replica holds

    def running_slots(self) -> int:
        """Fan-outs at once (GATEWAY_RUNNING, else this host's cores): about what the members can compute at once;
        more would only wait inside them, slower for all, instead of getting a fast 503 here."""
        wanted = self.settings.gateway_running or _usable_cores()
        return max(1, min(self.settings.threads, wanted))

    def load_version(self, version: str, folder: Path) -> LoadedStack:
        """Verify one version's artifacts and load its meta-ensemble."""
        from shared import artifacts
        from shared.learning.meta_model import MetaEnsemble

        manifest = artifacts.load_manifest(folder)
        return LoadedStack(MetaEnsemble.load(folder, manifest), manifest, load_reference(folder, manifest))

    def warm_version(self, model: LoadedStack) -> None:
        """Combine uniform probabilities of every member once."""
        k = len(model.classes)
        model.ensemble.combine({name: np.full(k, 1.0 / k) for name in model.ensemble.members})

    def switch_ready(self, version: str) -> str:
        """'' once every member replica holds `version`; else which ones it waits for."""
        state, reason = self.readiness(version)
        return "" if state == SlotState.READY else reason

    def readiness(self, version: str) -> tuple[SlotState, str]:
        """The version across the ensemble: READY when this gateway and every member (each replica that answers)
        hold it; UNAVAILABLE when one of them failed to load it (the reason names it); else LOADING."""
        with self._lock:
            own = self.slots.get(version)
        if own is None or own.state != SlotState.READY:
            return (own.state, f"stacking: {own.reason}") if own else (SlotState.LOADING, "stacking: not loaded yet")
        return member_readiness(version, self.member_indexes())

    def predict(self, probas: Mapping[str, Mapping[str, float]], version: str | None = None) -> np.ndarray:
        """Stacked (K,) probabilities of the members that answered, by `version`'s meta-models (default active)."""
        return self.require_stack(version).combine(probas)

    def sync(self, state=None) -> bool:
        """Follow serving.json; a canary or shadow version gets requests only once every member replica holds it
        (until then it is `pending` and the watcher keeps checking)."""
        done = super().sync(state)
        wanted = {c.version for c in (self.serving.canary, self.serving.shadow) if c is not None}
        ready = self.candidates_ready & wanted
        for version in wanted - ready:
            if self.readiness(version)[0] == SlotState.READY:
                ready.add(version)
        self.candidates_ready = ready
        self.converged = done and ready == wanted
        return self.converged

    def index(self) -> list[dict]:
        """Each stacking version as the ensemble holds it (READY only when every member replica holds it too, its
        canary or shadow share), then every member replica's own entries."""
        indexes = self.member_indexes()
        entries = []
        for entry in super().index():
            if entry["state"] == SlotState.READY:
                state, reason = member_readiness(entry["version"], indexes)
                entry = {**entry, "state": state.value, "reason": reason}
            for kind in ("canary", "shadow"):
                candidate = getattr(self.serving, kind)
                if candidate is not None and candidate.version == entry["version"]:
                    entry[kind] = candidate.percent
            entries.append(entry)
        for replicas in indexes.values():
            for replica in replicas:
                entries += [{**e, "replica": replica["replica"]} for e in replica.get("entries", [])]
        return entries

    @property
    def stack(self) -> LoadedStack:
        """The active version."""
        return self.require_stack()

    def require_stack(self, version: str | None = None) -> LoadedStack:
        """The pinned version if loaded (else VersionNotLoaded), or the active one."""
        return self.model_for(version)[1]

    def metadata(self) -> dict:
        """The active version's meta-models, members and artifacts, the loaded versions and this worker's
        readiness."""
        stack = self.stack
        files = stack.manifest.get("files", {})
        return {
            "name": GATEWAY,
            "model_version": stack.model_version,
            "classes": stack.classes,
            "members": stack.ensemble.members,
            "meta_models": sorted(stack.ensemble.models),
            "calibration": self.calibration,
            "features": stack.manifest.get("features", {}),
            "artifacts": {rel: sha for rel, sha in files.items() if rel.startswith("meta/")},
            "trained_at": stack.manifest.get("created_at"),
            "weights": stack.weights,
            "synthetic": "synthetic" in stack.weights.values(),
            "loaded_versions": self.loaded_versions(),
            "ready": self.health.ready,
        }

    # The active version's, for the routes that read one model (history, quality, drift, pages).
    @property
    def manifest(self) -> dict:
        return self.stack.manifest if self.model is not None else {}

    @property
    def reference(self) -> Reference | None:
        return self.stack.reference

    @property
    def calibration(self) -> dict | None:
        """None: the forests' votes as they are. Else the temperatures and how many images fitted them (not the
        trainer's paths: this is served)."""
        fitted = self.manifest.get("calibration")
        if not fitted:
            return None
        return {"method": fitted["method"], "temperatures": fitted["temperatures"], "images": fitted["data"]["images"],
                "at_bound": fitted.get("at_bound", [])}

    @property
    def model_version(self) -> str:
        return self.stack.model_version

    @property
    def weights(self) -> dict[str, str]:
        """{part: "real"|"synthetic"} of every feature kind the active stack was trained on."""
        return self.stack.weights

    def member_weights(self, name: str) -> dict[str, str]:
        return self.stack.member_weights(name)

    @property
    def synthetic(self) -> bool:
        """Trained on features of at least one synthetic (random-init) part."""
        return "synthetic" in self.weights.values()


def member_readiness(version: str, indexes: Mapping[str, list[dict]]) -> tuple[SlotState, str]:
    """READY when every member has at least one replica answering and each that answers holds `version` READY;
    UNAVAILABLE (the reason names member, replica and cause) when one failed to load it; else LOADING."""
    waiting, failed = [], []
    for member, replicas in indexes.items():
        answered = [r for r in replicas if "entries" in r]
        if not answered:
            waiting.append(f"{member}: no replica answered ({'; '.join(r.get('error', '') for r in replicas)})")
        for replica in answered:
            entry = next((e for e in replica["entries"] if e.get("version") == version), None)
            state = entry.get("state") if entry else None
            if state == SlotState.UNAVAILABLE:
                failed.append(f"{member} at {replica['replica']}: {entry.get('reason', '')}")
            elif state != SlotState.READY:
                waiting.append(f"{member} at {replica['replica']} {'is loading it' if entry else 'has not begun'}")
    if failed:
        return SlotState.UNAVAILABLE, "; ".join(failed)
    if waiting:
        return SlotState.LOADING, "; ".join(waiting)
    return SlotState.READY, ""
