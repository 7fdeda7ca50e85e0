"""GatewayRuntime: the gateway's model, the meta-ensemble over the members' probabilities. Never imports torch."""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from shared.config import Settings
from shared.learning.reference import Reference, load_reference
from shared.members import GATEWAY
from shared.serving.runtime import ModelRuntime
from shared.weights import manifest_parts


def _usable_cores() -> int:
    """The cores this process may run on (its affinity; all of them where the platform cannot say)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class GatewayRuntime(ModelRuntime):
    """The meta-models (one per subset of members), loaded once from the verified artifacts."""

    LOADING_MESSAGE = "The gateway is still loading its meta-models"

    def __init__(self, settings: Settings):
        super().__init__(GATEWAY, settings)
        self.manifest: dict = {}
        self.reference: Reference | None = None  # what the model keeps of its training data (None: older model)

    def running_slots(self) -> int:
        """Fan-outs at once (GATEWAY_RUNNING, else this host's cores): about what the members can compute at once;
        more would only wait inside them, slower for all, instead of getting a fast 503 here."""
        wanted = self.settings.gateway_running or _usable_cores()
        return max(1, min(self.settings.threads, wanted))

    def load(self) -> Any:
        """Verify the artifacts and load the meta-ensemble."""
        from shared import artifacts
        from shared.learning.meta_model import MetaEnsemble

        manifest = artifacts.load_manifest(self.settings.models_dir)
        ensemble = MetaEnsemble.load(self.settings.models_dir, manifest)
        self.reference = load_reference(self.settings.models_dir, manifest)
        self.manifest = manifest
        return ensemble

    def seen_in_training(self, sha256: str) -> bool:
        """Whether the model was trained or tested on this image (its label is then no new evidence)."""
        return self.reference is not None and sha256 in self.reference.images

    def warm_up(self) -> None:
        """Combine uniform probabilities of every member once."""
        k = len(self.model.classes)
        self.model.combine({name: np.full(k, 1.0 / k) for name in self.model.members})

    def predict(self, probas: Mapping[str, Mapping[str, float]]) -> np.ndarray:
        """Stacked (K,) probabilities from {member: {class: p}} of the members that answered, by the meta-model
        for exactly them."""
        ensemble = self.require_loaded()
        rows = {name: np.asarray([p[c] for c in ensemble.classes], dtype=float) for name, p in probas.items()}
        return ensemble.combine(rows)

    def metadata(self) -> dict:
        """The meta-models, their members and artifacts, and this worker's readiness."""
        ensemble = self.require_loaded()
        files = self.manifest.get("files", {})
        return {
            "name": GATEWAY,
            "model_version": self.model_version,
            "classes": ensemble.classes,
            "members": ensemble.members,
            "meta_models": sorted(ensemble.models),
            "calibration": self.calibration,
            "features": self.manifest.get("features", {}),
            "artifacts": {rel: sha for rel, sha in files.items() if rel.startswith("meta/")},
            "trained_at": self.manifest.get("created_at"),
            "weights": self.weights,
            "synthetic": self.synthetic,
            "ready": self.health.ready,
        }

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
        return self.manifest["model_version"]

    @property
    def weights(self) -> dict[str, str]:
        """{part: "real"|"synthetic"} of every feature kind the stack was trained on."""
        return manifest_parts(self.manifest)

    def member_weights(self, name: str) -> dict[str, str]:
        """The parts behind one member's answers, as the manifest records them (for a member that does not say)."""
        kind = self.manifest.get("learner_features", {}).get(name)
        return {kind: self.weights[kind]} if kind in self.weights else {}

    @property
    def synthetic(self) -> bool:
        """Trained on features of at least one synthetic (random-init) part."""
        return "synthetic" in self.weights.values()
