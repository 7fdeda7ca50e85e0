"""VersionedRuntime in one process: a member holding two versions shares one extractor, follows serving.json
(switch, drop), refuses a version it does not hold, and keeps serving when a new version fails to load."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared import repository
from shared.errors import VersionNotLoaded
from shared.serving.learner import LearnerRuntime, warmup_image
from shared.serving.versions import SlotState


@pytest.fixture
def two_versions(trained_models: Path, tmp_path: Path) -> tuple[Path, str, str]:
    from shared.artifacts import load_manifest, write_manifest

    root = tmp_path / "models"
    v1 = repository.publish(root, lambda folder: shutil.copytree(trained_models, folder)).version

    def other(folder: Path) -> None:
        shutil.copytree(trained_models, folder)
        manifest = load_manifest(folder)
        write_manifest(folder, {k: v for k, v in manifest.items() if k != "model_version"} | {"note": "v2"})

    return root, v1, repository.publish(root, other).version


def test_a_member_holds_two_versions_on_one_extractor_and_follows_serving_json(two_versions, trained_settings,
                                                                                tiny_weights):
    root, v1, v2 = two_versions
    settings = trained_settings.replace(models_dir=root, weights_dir=tiny_weights, model_poll_s=0)
    repository.write_state(root, repository.ServingState(active=v1, loaded=(v1, v2)))
    runtime = LearnerRuntime("clip_svm", settings)
    runtime.start(background=False)
    assert runtime.ready and runtime.active == v1 and sorted(runtime.loaded_versions()) == sorted([v1, v2])
    assert len(runtime.extractors) == 1  # both versions record the same CLIP config: one CLIP loaded
    first, second = runtime.model_for(v1)[1], runtime.model_for(v2)[1]
    assert first.learner.extractor is second.learner.extractor

    _proba, _waited, answered = runtime.predict(warmup_image(), version=v2)
    assert answered.model_version == v2
    with pytest.raises(VersionNotLoaded, match=f"does not hold version '0123'.*loaded: {v1}, {v2}"):
        runtime.model_for("0123")

    repository.set_active(root, v2)  # switched to; v1 stays loaded for the requests still on it
    assert runtime.sync() and runtime.active == v2 and runtime.model_version == v2
    assert sorted(runtime.loaded_versions()) == sorted([v1, v2])
    repository.drop_version(root, v1)  # then dropped
    assert runtime.sync() and runtime.loaded_versions() == [v2]
    assert [e["version"] for e in runtime.index() if e["active"]] == [v2]


def test_a_version_that_fails_to_load_is_unavailable_and_the_old_one_serves(two_versions, trained_settings,
                                                                           tiny_weights):
    root, v1, v2 = two_versions
    settings = trained_settings.replace(models_dir=root, weights_dir=tiny_weights, model_poll_s=0)
    runtime = LearnerRuntime("clip_logreg", settings)
    runtime.start(background=False)
    learner = root / "versions" / v2 / "learners" / "clip_logreg.skops"
    learner.write_bytes(learner.read_bytes() + b"\0")
    runtime.sync(repository.ServingState(active=v1, loaded=(v1, v2), stamp="test"))
    [entry] = [e for e in runtime.index() if e["version"] == v2]
    assert entry["state"] == SlotState.UNAVAILABLE and str(learner) in entry["reason"]
    assert runtime.active == v1 and runtime.predict(warmup_image())[2].model_version == v1
    with pytest.raises(VersionNotLoaded, match="UNAVAILABLE"):
        runtime.model_for(v2)
