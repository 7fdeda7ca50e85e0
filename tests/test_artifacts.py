"""Artifacts: skops round trip with an allow-list, manifest + manifest.sha256, tamper and version checks."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from shared import artifacts
from shared.errors import ArtifactError


class UnlistedEstimator(BaseEstimator):
    """A type outside the allow-list, standing in for a crafted artifact."""

    def fit(self, X, y):
        self.seen_ = len(X)
        return self


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A folder with one saved LogisticRegression and a signed manifest."""
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    artifacts.save_object(LogisticRegression().fit(X, y), tmp_path, "learners/lr.skops")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("# report\n")
    artifacts.write_manifest(tmp_path, {"classes": ["a", "b"], "members": [],
                                        "files": ["learners/lr.skops", "report/report.md"]})
    return tmp_path


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def resign(models_dir: Path, **changes) -> None:
    """Edit manifest.json and re-sign it, as a deliberate (not tampered) change would."""
    manifest = json.loads((models_dir / artifacts.MANIFEST).read_text())
    manifest.update(changes)
    data = json.dumps(manifest).encode()
    (models_dir / artifacts.MANIFEST).write_bytes(data)
    (models_dir / artifacts.MANIFEST_SHA).write_text(hashlib.sha256(data).hexdigest())


def test_round_trip_keeps_predictions(models_dir: Path) -> None:
    manifest = artifacts.load_manifest(models_dir)
    model = artifacts.load_object(models_dir, "learners/lr.skops", manifest)
    assert model.predict_proba(np.zeros((1, 3))).shape == (1, 2)
    assert manifest["format_version"] == artifacts.FORMAT_VERSION
    assert set(manifest["files"]) == {"learners/lr.skops", "report/report.md"}
    assert len(manifest["model_version"]) == 12


def test_manifest_records_library_versions(models_dir: Path) -> None:
    versions = artifacts.load_manifest(models_dir)["versions"]
    assert {"scikit-learn", "numpy", "skops", "python"} <= set(versions)


def test_one_changed_byte_in_an_artifact_is_refused_naming_the_file(models_dir: Path) -> None:
    flip_byte(models_dir / "learners/lr.skops")
    with pytest.raises(ArtifactError, match=r"lr\.skops.*sha256"):
        artifacts.load_manifest(models_dir)


def test_one_changed_byte_in_a_report_file_is_refused(models_dir: Path) -> None:
    flip_byte(models_dir / "report" / "report.md", offset=0)
    with pytest.raises(ArtifactError, match=r"report\.md"):
        artifacts.load_manifest(models_dir)


def test_one_changed_byte_in_the_manifest_is_refused(models_dir: Path) -> None:
    path = models_dir / artifacts.MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"a"', b'"c"', 1))
    with pytest.raises(ArtifactError, match=r"manifest\.json was modified"):
        artifacts.load_manifest(models_dir)


def test_missing_manifest_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="missing; train first"):
        artifacts.load_manifest(tmp_path)


def test_missing_artifact_is_named(models_dir: Path) -> None:
    (models_dir / "learners/lr.skops").unlink()
    with pytest.raises(ArtifactError, match=r"lr\.skops is listed in the manifest but missing"):
        artifacts.load_manifest(models_dir)


def test_other_format_version_is_refused(models_dir: Path) -> None:
    resign(models_dir, format_version=artifacts.FORMAT_VERSION + 1)
    with pytest.raises(ArtifactError, match="format version 3; this code reads versions 1 and 2"):
        artifacts.load_manifest(models_dir)


def test_format_version_1_reads_as_uncalibrated(models_dir: Path) -> None:
    resign(models_dir, format_version=1)  # written before calibration existed: no "calibration" key
    manifest = artifacts.load_manifest(models_dir)
    assert manifest["format_version"] == 1 and manifest.get("calibration") is None


def test_other_sklearn_minor_version_is_refused(models_dir: Path) -> None:
    manifest = json.loads((models_dir / artifacts.MANIFEST).read_text())
    resign(models_dir, versions={**manifest["versions"], "scikit-learn": "0.24.2"})
    with pytest.raises(ArtifactError, match=r"scikit-learn 0\.24\.2; this process runs"):
        artifacts.load_manifest(models_dir)


def test_load_object_rechecks_the_bytes_it_deserialises(models_dir: Path) -> None:
    manifest = artifacts.load_manifest(models_dir)
    flip_byte(models_dir / "learners/lr.skops")  # changed after the manifest check
    with pytest.raises(ArtifactError, match=r"lr\.skops does not match"):
        artifacts.load_object(models_dir, "learners/lr.skops", manifest)


def test_unlisted_file_is_not_loaded(models_dir: Path) -> None:
    shutil.copy(models_dir / "learners/lr.skops", models_dir / "learners/other.skops")
    with pytest.raises(ArtifactError, match="not listed in the manifest"):
        artifacts.load_object(models_dir, "learners/other.skops", artifacts.load_manifest(models_dir))


def test_saving_a_type_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="UnlistedEstimator"):
        artifacts.save_object(UnlistedEstimator().fit([[1]], [0]), tmp_path, "x.skops")
    assert not (tmp_path / "x.skops").exists()


def test_loading_a_type_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    # Written with skops directly, as an attacker would; the manifest hash matches, the type does not.
    (tmp_path / "x.skops").write_bytes(sio.dumps(UnlistedEstimator().fit([[1]], [0])))
    manifest = artifacts.write_manifest(tmp_path, {"files": ["x.skops"]})
    with pytest.raises(ArtifactError, match=r"x\.skops could not be loaded safely.*UnlistedEstimator"):
        artifacts.load_object(tmp_path, "x.skops", manifest)


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    artifacts.write_bytes_atomic(target, b"old")
    artifacts.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]
    assert target.stat().st_mode & 0o777 == 0o644
