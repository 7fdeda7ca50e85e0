"""The model repository: versions side by side in MODELS_DIR/versions/<model_version>/, and serving.json, the one
file that says which version answers, which stay loaded, and which candidate gets a share of the traffic.

    models/
      versions/3f2a9c01b7e4/   a whole trained model (manifest.json, learners/, meta/, ...), named by its version
      versions/a81d44e0c9f2/
      serving.json             {"active": ..., "loaded": [...], "previous": [...], "canary": ..., "shadow": ...}

A version is never written over: `publish` trains into a hidden staging folder and renames it into place once its
manifest is written. serving.json is replaced atomically (write, fsync, rename); every service polls it and
converges (serving/versions.py). Only its writers (`python -m shared models ...`, the gateway's repository API
where the folder is writable) change it. A models folder of the older single-folder layout (manifest.json at its
top) is one version, active unless serving.json names another.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from shared.artifacts import MANIFEST, load_manifest, write_bytes_atomic
from shared.errors import ArtifactError, ClassifierError, NotFound, VersionConflict

VERSIONS = "versions"
POINTER = "serving.json"
LOCK = ".serving.lock"
DEFAULT_KEEP = 3  # MODEL_VERSIONS_LOADED's default
STAGING_PREFIX = ".staging-"
# serving.json keeps this many earlier active versions for `rollback`.
HISTORY_LENGTH = 10


@dataclass(frozen=True)
class Candidate:
    """A version that gets `percent` of the traffic: answered by it (canary) or copied to it (shadow)."""

    version: str
    percent: float

    @classmethod
    def parse(cls, value: object) -> "Candidate | None":
        if not isinstance(value, dict):
            return None
        return cls(str(value["version"]), float(value["percent"]))


@dataclass(frozen=True)
class ServingState:
    """What serving.json says; `loaded` lists what every service keeps loaded, the active version first."""

    active: str | None = None
    loaded: tuple[str, ...] = ()
    previous: tuple[str, ...] = ()
    canary: Candidate | None = None
    shadow: Candidate | None = None
    changed_at: str = ""
    stamp: str = field(default="", compare=False)  # the file's sha256: a service acts when it changes

    def to_json(self) -> bytes:
        body = {key: value for key, value in asdict(self).items() if key != "stamp"}
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    def wanted(self) -> tuple[str, ...]:
        """Every version a service should hold: the active one, `loaded` (a version being loaded comes right after
        the active one), the candidates. Writers keep it within MODEL_VERSIONS_LOADED (`fit`)."""
        extra = [c.version for c in (self.canary, self.shadow) if c is not None]
        return tuple(dict.fromkeys(v for v in (self.active, *self.loaded, *extra) if v))


@dataclass(frozen=True)
class VersionInfo:
    """One version on disk: its id, folder, when it was trained, and whether it is the old single-folder layout."""

    version: str
    path: Path
    created_at: str | None
    legacy: bool = False


def manifest_version(folder: Path) -> str:
    """The version id of a model folder: its manifest's sha256, first 12 hex (as artifacts.load_manifest names it)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; train first: python -m shared train --out {folder}")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def is_repository(root: Path) -> bool:
    root = Path(root)
    return (root / VERSIONS).is_dir() or (root / POINTER).is_file()


def has_model(root: Path) -> bool:
    """Whether `root` holds a model to serve (a version, or the older layout's manifest)."""
    root = Path(root)
    return (root / MANIFEST).is_file() or bool(list_versions(root))


def list_versions(root: Path) -> list[VersionInfo]:
    """Every version in the repository, oldest first; the older layout's top-level model is one of them."""
    root = Path(root)
    found = []
    if (root / MANIFEST).is_file():
        found.append(_info(root, manifest_version(root), legacy=True))
    folder = root / VERSIONS
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.name.startswith(".") and (path / MANIFEST).is_file():
                found.append(_info(path, path.name))
    return sorted(found, key=lambda info: (info.created_at or "", info.version))


def _info(path: Path, version: str, legacy: bool = False) -> VersionInfo:
    try:
        created = json.loads((path / MANIFEST).read_text()).get("created_at")
    except (OSError, ValueError):
        created = None
    return VersionInfo(version, path, created, legacy)


def version_dir(root: Path, version: str) -> Path:
    """The folder of one version; NotFound (404) naming the versions there are when it is not in the repository."""
    root = Path(root)
    candidate = root / VERSIONS / version
    if _safe_name(version) and (candidate / MANIFEST).is_file():
        return candidate
    if (root / MANIFEST).is_file() and manifest_version(root) == version:
        return root
    known = ", ".join(info.version for info in list_versions(root)) or "none"
    raise NotFound(f"There is no version {version!r} in {root}; it has: {known}.", code="version_not_found")


def _safe_name(version: str) -> bool:
    return bool(version) and all(c.isalnum() or c in "-_." for c in version) and not version.startswith(".")


def read_state(root: Path) -> ServingState:
    """serving.json; without it, the only version there is (or the older layout's model) is active."""
    root = Path(root)
    path = root / POINTER
    if path.is_file():
        data = path.read_bytes()
        try:
            body = json.loads(data)
            return ServingState(
                active=body.get("active"), loaded=tuple(body.get("loaded", ())),
                previous=tuple(body.get("previous", ())), canary=Candidate.parse(body.get("canary")),
                shadow=Candidate.parse(body.get("shadow")), changed_at=body.get("changed_at", ""),
                stamp=hashlib.sha256(data).hexdigest())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ClassifierError(f"{path} is not a valid serving state ({exc}); fix it or remove it.", status=503,
                                  code="serving_state_invalid") from None
    versions = list_versions(root)
    legacy = [info for info in versions if info.legacy]
    only = legacy[0] if legacy else (versions[-1] if len(versions) == 1 else None)
    if only is None:
        return ServingState()
    return ServingState(active=only.version, loaded=(only.version,), stamp=f"implicit:{only.version}")


@contextmanager
def changing(root: Path) -> Iterator[None]:
    """Hold the repository's lock while serving.json is read, changed and written (writers on one host: the CLI,
    the gateway's workers); readers need none, the file is replaced whole."""
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_state(root: Path, state: ServingState) -> ServingState:
    """Replace serving.json atomically; the state as read back (with its stamp)."""
    from datetime import datetime, timezone

    state = replace(state, changed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_bytes_atomic(Path(root) / POINTER, state.to_json())
    return read_state(root)


def active_dir(root: Path) -> Path:
    """The active version's folder: what `evaluate`, `predict`, `classify-batch` and `restack` read by default."""
    root = Path(root)
    state = read_state(root)
    if state.active is None:
        if is_repository(root):
            raise ArtifactError(f"{root} has versions but none is active: python -m shared models activate <version>")
        return root  # not a repository: the caller's own error names the missing manifest
    return version_dir(root, state.active)


def publish(root: Path, build: Callable[[Path], object], activate: bool | None = None,
            keep_loaded: int = DEFAULT_KEEP) -> VersionInfo:
    """Run `build(folder)` into a staging folder, then move it to versions/<its version>.

    `activate`: True makes it active, False never, None (default) only when nothing is active yet (a first model).
    The staging folder is removed if `build` fails; a version already there (the same bytes) is kept as it is.
    """
    root = Path(root)
    before = read_state(root)
    staging = root / VERSIONS / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        build(staging)
        version = manifest_version(staging)
        target = root / VERSIONS / version
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if activate or (activate is None and before.active is None):
        set_active(root, version, keep_loaded)
    elif not (root / POINTER).is_file() and before.active is not None:
        with changing(root):  # the one version active by default stays so, now that there are two
            write_state(root, before)
    return _info(target, version)


def set_active(root: Path, version: str, keep_loaded: int = DEFAULT_KEEP) -> ServingState:
    """Make `version` active after verifying it (every file against its manifest); the old active one stays
    loaded (in-flight requests finish on it, rollback is instant) and first in `previous`."""
    root = Path(root)
    load_manifest(version_dir(root, version))  # a tampered or incomplete version fails here, naming the file
    with changing(root):
        state = read_state(root)
        old = state.active
        previous = (old, *state.previous) if old and old != version else state.previous
        previous = tuple(v for v in dict.fromkeys(previous) if v != version)[:HISTORY_LENGTH]
        new = replace(state, active=version, loaded=(version, *(v for v in (old, *state.loaded) if v)),
                      previous=previous, canary=_unless(state.canary, version), shadow=_unless(state.shadow, version))
        return write_state(root, fit(new, keep_loaded, must=(version, old)))


def add_loaded(root: Path, version: str, keep_loaded: int = DEFAULT_KEEP) -> ServingState:
    """List `version` to be loaded everywhere beside the active one (not answering yet)."""
    with changing(root):
        state = read_state(root)
        new = replace(state, loaded=(state.active, version, *state.loaded) if state.active else (version,))
        return write_state(root, fit(new, keep_loaded, must=(state.active, version)))


def drop_version(root: Path, version: str) -> ServingState:
    """Take a version that is not active out of `loaded` and the candidates: every service drops it."""
    with changing(root):
        state = read_state(root)
        if version == state.active:
            raise VersionConflict(f"{version} is the active version; activate another before unloading it.")
        loaded = tuple(v for v in state.loaded if v != version)
        return write_state(root, replace(state, loaded=loaded, canary=_unless(state.canary, version),
                                         shadow=_unless(state.shadow, version)))


def fit(state: ServingState, keep: int, must: tuple[str | None, ...] = ()) -> ServingState:
    """`state` with the oldest entries of `loaded` left out until every service holds at most `keep` versions;
    VersionConflict when the active one, `must` and the candidates alone are more."""
    needed = set(v for v in (state.active, *must) if v) | {c.version for c in (state.canary, state.shadow) if c}
    if len(needed) > keep:
        raise VersionConflict(f"That would hold {len(needed)} versions loaded ({', '.join(sorted(needed))}); "
                              f"MODEL_VERSIONS_LOADED allows {keep}. Remove the canary or shadow first, or raise it.",
                              code="too_many_versions")
    loaded, room = [], keep - len(needed)
    for v in dict.fromkeys(v for v in state.loaded if v):
        if v in needed:
            loaded.append(v)
        elif room > 0:
            loaded.append(v)
            room -= 1
    return replace(state, loaded=tuple(loaded))


def rollback_target(root: Path) -> str:
    """The version that was active before this one (VersionConflict when serving.json records none)."""
    state = read_state(root)
    earlier = [v for v in state.previous if v != state.active]
    if not earlier:
        raise VersionConflict(f"{Path(root) / POINTER} records no earlier active version to roll back to.")
    return earlier[0]


def forget_previous(root: Path, version: str) -> ServingState:
    """Take `version` out of `previous`: after a rollback from it, the next rollback must not undo this one."""
    with changing(root):
        state = read_state(root)
        return write_state(root, replace(state, previous=tuple(v for v in state.previous if v != version)))


def set_candidate(root: Path, kind: str, version: str | None, percent: float = 0.0,
                  keep_loaded: int = DEFAULT_KEEP) -> ServingState:
    """Give `version` `percent` of the traffic as the canary or the shadow (kind); None or 0 % removes it (the
    version stays loaded: a gateway worker that has not seen the change yet may still send it requests)."""
    root = Path(root)
    if kind not in ("canary", "shadow"):
        raise ValueError(f"kind must be canary or shadow, got {kind!r}")
    if not 0.0 <= percent <= 100.0:
        raise VersionConflict(f"The {kind} percentage must be between 0 and 100; got {percent:g}.", status=400,
                              code="bad_percent")
    with changing(root):
        state = read_state(root)
        if version is None or percent == 0:
            return write_state(root, replace(state, **{kind: None}))
        load_manifest(version_dir(root, version))
        if version == state.active:
            raise VersionConflict(f"{version} is the active version; a {kind} must be another version.")
        new = replace(state, loaded=(state.active, version, *state.loaded), **{kind: Candidate(version, percent)})
        return write_state(root, fit(new, keep_loaded, must=(version,)))


def _unless(candidate: Candidate | None, version: str) -> Candidate | None:
    """A candidate that has just become the active version (or is dropped) is no longer a candidate."""
    return None if candidate is not None and candidate.version == version else candidate
