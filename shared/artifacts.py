"""Safe artifacts on disk: skops files, manifest.json + manifest.sha256, hash and version checks."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from shared.errors import ArtifactError

FORMAT_VERSION = 2  # 2: the manifest may carry the stack's calibration, which code reading only 1 would drop
READABLE_FORMATS = (1, 2)  # 1: no calibration (the forests' votes), read as such
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest.sha256"

# Every type our pipelines and meta-models contain. skops refuses anything else, so a crafted
# file cannot make us import or call arbitrary code; we never pass trusted=True.
ALLOWED_TYPES: tuple[str, ...] = (
    "builtins.slice",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int64",
    "numpy.ndarray",
    "numpy.random._mt19937.MT19937",
    "numpy.random.mtrand.RandomState",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.feature_extraction.text.HashingVectorizer",
    "sklearn.feature_extraction.text.TfidfTransformer",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.svm._classes.SVC",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; services may run as another user than training
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_object(obj: Any, models_dir: Path, relpath: str) -> str:
    """Serialise a fitted estimator with skops to models_dir/relpath atomically; returns its sha256."""
    import skops.io as sio  # lazily: importing skops walks every sklearn module

    data = sio.dumps(obj)
    _check_allowed(sio.get_untrusted_types(data=data), relpath)
    write_bytes_atomic(Path(models_dir) / relpath, data)
    return hashlib.sha256(data).hexdigest()


def _check_allowed(types: list[str], relpath: str) -> None:
    # Refuse at save time too: an artifact we could not load later is a training bug.
    unknown = sorted(set(types) - set(ALLOWED_TYPES))
    if unknown:
        raise ArtifactError(f"{relpath} would contain types outside the allow-list: {', '.join(unknown)}")


def library_versions() -> dict[str, str]:
    """Versions recorded in the manifest and checked on load."""
    from importlib.metadata import version

    from shared import __version__

    libraries = {name: version(name) for name in ("numpy", "scipy", "scikit-learn", "skops")}
    return {"python": platform.python_version(), **libraries, "shared": __version__}


def write_manifest(models_dir: Path, manifest: dict) -> dict:
    """Hash every file the manifest names, then write manifest.json and manifest.sha256 (last)."""
    models_dir = Path(models_dir)
    manifest = dict(manifest, format_version=FORMAT_VERSION, versions=library_versions())
    manifest["files"] = {rel: sha256_file(models_dir / rel) for rel in sorted(manifest.get("files", {}))}
    data = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    write_bytes_atomic(models_dir / MANIFEST, data)
    write_bytes_atomic(models_dir / MANIFEST_SHA, (hashlib.sha256(data).hexdigest() + "\n").encode())
    return json.loads(data)


def load_manifest(models_dir: Path) -> dict:
    """Read manifest.json after checking its own sha256, every file hash and version compatibility."""
    models_dir = Path(models_dir)
    data = _read_manifest_bytes(models_dir)
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ArtifactError(f"{models_dir / MANIFEST} is not valid JSON: {exc}") from None
    _check_versions(manifest, models_dir / MANIFEST)
    for rel, expected in manifest.get("files", {}).items():
        _check_file_hash(models_dir, rel, expected)
    manifest["model_version"] = hashlib.sha256(data).hexdigest()[:12]
    return manifest


def _read_manifest_bytes(models_dir: Path) -> bytes:
    path, sha_path = models_dir / MANIFEST, models_dir / MANIFEST_SHA
    for needed in (path, sha_path):
        if not needed.is_file():
            raise ArtifactError(f"{needed} is missing; train first: python -m shared train --out {models_dir}")
    data = path.read_bytes()
    expected = sha_path.read_text().strip()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArtifactError(f"{path} was modified after training: its sha256 is {actual}, "
                            f"{sha_path.name} says {expected}. Retrain or restore the file.")
    return data


def _check_versions(manifest: dict, path: Path) -> None:
    found = manifest.get("format_version")
    if found not in READABLE_FORMATS:
        readable = " and ".join(str(v) for v in READABLE_FORMATS)
        raise ArtifactError(f"{path} has artifact format version {found}; this code reads versions {readable}. Retrain.")
    trained = manifest.get("versions", {}).get("scikit-learn", "?")
    running = library_versions()["scikit-learn"]
    if _major_minor(trained) != _major_minor(running):
        raise ArtifactError(f"{path} was trained with scikit-learn {trained}; this process runs {running} "
                            "(major.minor must match). Retrain or install the matching version.")


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def _check_file_hash(models_dir: Path, rel: str, expected: str) -> None:
    path = models_dir / rel
    if not path.is_file():
        raise ArtifactError(f"{path} is listed in the manifest but missing. Retrain or restore it.")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(f"{path} has sha256 {actual}, but the manifest records {expected}: "
                            "the file changed after training. Retrain or restore it.")


def load_object(models_dir: Path, relpath: str, manifest: dict) -> Any:
    """Load one skops artifact, re-checking its hash on the very bytes we deserialise."""
    path = Path(models_dir) / relpath
    expected = manifest.get("files", {}).get(relpath)
    if expected is None:
        raise ArtifactError(f"{path} is not listed in the manifest; refusing to load an unknown file.")
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path} does not match the sha256 the manifest records ({expected}). Retrain or restore it.")
    return _loads(data, path)


def _loads(data: bytes, path: Path) -> Any:
    import skops.io as sio

    try:
        return sio.loads(data, trusted=list(ALLOWED_TYPES))
    except Exception as exc:  # skops raises UntrustedTypesFoundException and format errors alike
        raise ArtifactError(f"{path} could not be loaded safely: {exc}") from None
