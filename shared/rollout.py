"""Putting a version in front of traffic with nothing dropped: load it everywhere, then switch, then keep the old one.

    1. load:   serving.json lists the new version in `loaded`; every worker of every service loads and warms it
               beside the active one. Nothing answers with it yet.
    2. wait:   until the gateway sees it READY in itself and in every member replica (its repository index). A
               failure there (a tampered file, a missing learner) takes it out of `loaded` again: the old version
               never stopped serving, and the error names the file.
    3. switch: serving.json makes it active. The gateway switches at once (every member already holds it); requests
               already running finish on the old version, which stays loaded for an instant rollback.

The gateway's repository API runs this in-process; `python -m shared models activate` runs it from any machine that
can write the models folder, watching the gateway's index over HTTP.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from shared import repository
from shared.artifacts import load_manifest
from shared.errors import ArtifactError, VersionConflict
from shared.serving.versions import SlotState

Readiness = Callable[[str], "tuple[str, str]"]  # version -> (state, reason) across the ensemble
POLL_S = 0.2


def activate(root: Path, version: str, readiness: Readiness, active_now: Callable[[], str | None], timeout_s: float,
             keep_loaded: int, say: Callable[[str], None] = lambda _: None) -> repository.ServingState:
    """Load `version` everywhere, switch to it once it is READY everywhere, and wait for the gateway to answer with
    it; VersionConflict with the reason (and the old version still active) when it cannot."""
    root = Path(root)
    verify(root, version)
    before = repository.read_state(root)
    if before.active != version:
        load(root, version, readiness, timeout_s, keep_loaded, say)
        repository.set_active(root, version, keep_loaded)
    say(f"{version} is active; waiting for the gateway to answer with it")
    state, reason = _wait(lambda: ("READY", "") if active_now() == version else ("LOADING", f"the gateway answers "
                                                                                 f"with {active_now()}"),
                          timeout_s, version)
    if state != SlotState.READY:
        raise VersionConflict(f"serving.json makes {version} active, but {reason}. Every service holds it; see "
                              "GET /v2/repository/index on the gateway.", status=504, code="switch_timeout")
    return repository.read_state(root)


def load(root: Path, version: str, readiness: Readiness, timeout_s: float, keep_loaded: int,
         say: Callable[[str], None] = lambda _: None) -> repository.ServingState:
    """Phase 1 alone: every service loads `version` beside the active one (for a canary, shadow or pinning)."""
    root = Path(root)
    verify(root, version)
    before = repository.read_state(root)
    if version not in before.wanted():
        repository.add_loaded(root, version, keep_loaded)
    say(f"loading {version} in every service beside {before.active}")
    def still_wanted(version: str) -> tuple[str, str]:
        if version not in repository.read_state(root).wanted():
            return SlotState.UNAVAILABLE, "another change to serving.json took it out meanwhile"
        return readiness(version)

    state, reason = _wait(lambda: still_wanted(version), timeout_s, version, fail_on=SlotState.UNAVAILABLE)
    if state != SlotState.READY:
        if version not in before.wanted():  # only what this call added is taken out again
            repository.drop_version(root, version)
        raise VersionConflict(f"Version {version} did not load: {reason}. {before.active} keeps serving.",
                              code="version_load_failed")
    return repository.read_state(root)


def verify(root: Path, version: str) -> None:
    """Every file of the version against its manifest, before any service is asked to load it: a tampered or
    incomplete version is refused here (409), naming the file, with the active version unchanged."""
    try:
        load_manifest(repository.version_dir(root, version))
    except ArtifactError as exc:
        active = repository.read_state(root).active
        raise VersionConflict(f"Version {version} cannot be loaded: {exc.message} {active} keeps serving.",
                              code="version_load_failed") from None


def _wait(check: Callable[[], tuple[str, str]], timeout_s: float, version: str,
          fail_on: str | None = None) -> tuple[str, str]:
    deadline = time.monotonic() + timeout_s
    state, reason = check()
    while state != SlotState.READY and state != fail_on:
        if time.monotonic() > deadline:
            return "TIMEOUT", f"not READY within {timeout_s:g} s ({reason})"
        time.sleep(POLL_S)
        state, reason = check()
    return state, reason


class GatewayIndex:
    """The gateway's repository index over HTTP, for `python -m shared models` on another machine."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0):
        self.url = url.rstrip("/") + "/v2/repository/index"
        self.headers = headers or {}
        self.timeout_s = timeout_s

    def entries(self) -> list[dict] | None:
        """The index, or None when the gateway cannot be reached."""
        import requests

        try:
            resp = requests.get(self.url, headers=self.headers, timeout=self.timeout_s)
        except requests.RequestException:
            return None
        if resp.status_code != 200:
            raise VersionConflict(f"{self.url} answered HTTP {resp.status_code}: {resp.text[:200]}", status=502,
                                  code="gateway_error")
        return resp.json()

    def readiness(self, version: str) -> tuple[str, str]:
        entries = self.entries()
        if entries is None:
            return SlotState.LOADING, f"{self.url} does not answer"
        entry = next((e for e in entries if _is_stack(e) and e.get("version") == version), None)
        if entry is None:
            return SlotState.LOADING, "the gateway has not begun loading it"
        return entry["state"], entry.get("reason", "")

    def active(self) -> str | None:
        entries = self.entries() or []
        return next((e["version"] for e in entries if _is_stack(e) and e.get("active")), None)


def _is_stack(entry: dict) -> bool:
    from shared.members import GATEWAY

    return entry.get("name") == GATEWAY and "replica" not in entry
