"""The model repository on disk: versions side by side, serving.json written atomically, the old layout as one
version, activation refusing a tampered version by naming its file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shared import repository
from shared.errors import ArtifactError, ClassifierError, NotFound, VersionConflict


@pytest.fixture
def repo(trained_models: Path, tmp_path: Path) -> dict:
    """Two versions: the session's model, and a copy whose manifest differs by one field (so another version)."""
    from shared.artifacts import load_manifest, write_manifest

    root = tmp_path / "models"
    first = repository.publish(root, lambda folder: shutil.copytree(trained_models, folder))

    def other(folder: Path) -> None:
        shutil.copytree(trained_models, folder)
        manifest = load_manifest(folder)
        write_manifest(folder, {k: v for k, v in manifest.items() if k != "model_version"} | {"note": "second"})

    second = repository.publish(root, other)
    return {"root": root, "v1": first.version, "v2": second.version}


def test_publish_names_a_version_by_its_manifest_and_activates_only_the_first(repo):
    root, v1, v2 = repo["root"], repo["v1"], repo["v2"]
    assert (root / "versions" / v1 / "manifest.json").is_file() and v1 != v2
    assert repository.manifest_version(root / "versions" / v2) == v2
    state = repository.read_state(root)
    assert state.active == v1 and state.loaded == (v1,)
    assert not [p for p in (root / "versions").iterdir() if p.name.startswith(".")]  # no staging left
    assert repository.active_dir(root) == root / "versions" / v1


def test_a_failed_build_leaves_nothing(tmp_path):
    def fails(folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "half-written").write_text("x")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError):
        repository.publish(tmp_path / "models", fails)
    assert list((tmp_path / "models" / "versions").iterdir()) == []


def test_activate_keeps_the_old_one_loaded_and_rollback_target_is_it(repo):
    root, v1, v2 = repo["root"], repo["v1"], repo["v2"]
    state = repository.set_active(root, v2, keep_loaded=3)
    assert (state.active, state.loaded, state.previous) == (v2, (v2, v1), (v1,))
    assert repository.rollback_target(root) == v1
    repository.set_active(root, v1, keep_loaded=3)
    state = repository.forget_previous(root, v2)
    assert state.active == v1 and state.previous == ()
    with pytest.raises(VersionConflict, match="no earlier active version"):
        repository.rollback_target(root)


def test_a_tampered_version_is_refused_naming_its_file(repo):
    root, v2 = repo["root"], repo["v2"]
    learner = root / "versions" / v2 / "learners" / "ocr_nb.skops"
    learner.write_bytes(learner.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match=str(learner)):
        repository.set_active(root, v2)
    assert repository.read_state(root).active == repo["v1"]


def test_unknown_versions_are_404s_naming_the_known_ones(repo):
    with pytest.raises(NotFound, match=f"no version '0123'.*{repo['v1']}"):
        repository.version_dir(repo["root"], "0123")
    with pytest.raises(NotFound):
        repository.version_dir(repo["root"], "../versions")


def test_the_single_folder_layout_is_one_active_version(trained_models):
    state = repository.read_state(trained_models)
    assert state.active == repository.manifest_version(trained_models) and state.loaded == (state.active,)
    assert repository.active_dir(trained_models) == trained_models
    [info] = repository.list_versions(trained_models)
    assert info.legacy and info.version == state.active


def test_candidates_are_loaded_and_cleared_when_activated(repo):
    root, v1, v2 = repo["root"], repo["v1"], repo["v2"]
    state = repository.set_candidate(root, "canary", v2, 10)
    assert state.canary == repository.Candidate(v2, 10.0) and state.wanted() == (v1, v2)
    with pytest.raises(VersionConflict, match="between 0 and 100"):
        repository.set_candidate(root, "canary", v2, 150)
    with pytest.raises(VersionConflict, match="is the active version"):
        repository.set_candidate(root, "shadow", v1, 10)
    assert repository.set_active(root, v2).canary is None  # the canary became the active version
    body = json.loads((root / repository.POINTER).read_text())
    assert body["active"] == v2 and body["changed_at"]


def test_a_corrupt_serving_json_is_an_error_naming_it(repo):
    (repo["root"] / repository.POINTER).write_text("{not json")
    with pytest.raises(ClassifierError, match="serving.json is not a valid serving state") as raised:
        repository.read_state(repo["root"])
    assert raised.value.status == 503


def test_the_bound_on_loaded_versions_drops_the_oldest_and_refuses_what_cannot_fit(repo, trained_models):
    from shared.artifacts import load_manifest, write_manifest

    root, v1, v2 = repo["root"], repo["v1"], repo["v2"]

    def third(folder: Path) -> None:
        shutil.copytree(trained_models, folder)
        write_manifest(folder, {k: v for k, v in load_manifest(folder).items() if k != "model_version"} | {"n": 3})

    v3 = repository.publish(root, third).version
    repository.set_active(root, v2, keep_loaded=2)
    state = repository.add_loaded(root, v3, keep_loaded=2)  # v1 (previous) makes room for the one being loaded
    assert state.wanted() == (v2, v3)
    assert repository.set_candidate(root, "canary", v1, 10, keep_loaded=2).wanted() == (v2, v1)  # v3 made room
    with pytest.raises(VersionConflict, match="MODEL_VERSIONS_LOADED allows 2"):
        repository.set_candidate(root, "shadow", v3, 10, keep_loaded=2)  # active + canary + shadow
    with pytest.raises(VersionConflict, match="is the active version"):
        repository.drop_version(root, v2)
