"""The gateway's model repository routes (Triton's model repository extension): load a version in every service and
switch to it, unload one, give a candidate a canary share; and the members' indexes the switch waits for.

Each writes MODELS_DIR/serving.json (repository.py) and waits for the ensemble to follow it (rollout.py), so every
gateway replica and every member replica converges on the same state. They need an admin key (auth.require_admin)
and a models folder this gateway can write; where it is mounted read-only, `python -m shared models` on a machine
that can write it does the same.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from shared import repository, rollout
from shared.config import Settings
from shared.errors import BadRequest, VersionConflict
from shared.gateway.client import MemberClient
from shared.gateway.runtime import GatewayRuntime
from shared.members import GATEWAY
from shared.serving import auth
from shared.serving.runtime import current_runtime

INDEX_PATH = "/v2/repository/index"
INDEX_TIMEOUT_S = (1.0, 3.0)
bp = Blueprint("versions", __name__)


def init_app(app: Flask, runtime: GatewayRuntime, client: MemberClient) -> None:
    """The repository routes, and the runtime's view of its members' versions."""
    runtime.member_indexes = lambda: member_indexes(client)
    for rule in (LOAD, UNLOAD, CANARY, SHADOW):
        auth.admin_rule(rule)
    app.register_blueprint(bp)


def member_indexes(client: MemberClient) -> dict[str, list[dict]]:
    """{member: [{"replica": address, "entries": its index} or {"replica", "error"}]} for every replica known."""
    out: dict[str, list[dict]] = {}
    for name, pool in client.pools.items():
        out[name] = []
        for address, base_url in pool.addresses():
            try:
                resp = client.session.get(base_url + INDEX_PATH, timeout=INDEX_TIMEOUT_S)
                entries = resp.json() if resp.status_code == 200 else None
                if not isinstance(entries, list):
                    raise ValueError(f"HTTP {resp.status_code}")
                out[name].append({"replica": address, "entries": entries})
            except (requests.RequestException, ValueError) as exc:
                out[name].append({"replica": address, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return out


LOAD = "/v2/repository/models/<name>/load"
UNLOAD = "/v2/repository/models/<name>/unload"
CANARY = "/v1/versions/canary"
SHADOW = "/v1/versions/shadow"
COMPARE = "/v1/versions/compare"


@bp.post(LOAD)
def load(name: str) -> Response:
    """Load a version in every member and the gateway, warm it, then switch to it (unless activate is false).
    ---
    post:
      summary: Load a model version everywhere, then make it active (Triton's repository load)
      tags: [model repository]
      security: [{bearer: []}, {apiKey: []}]
      requestBody: {content: {application/json: {schema: RepositoryRequest}}}
      responses:
        "200": {description: The serving state now, content: {application/json: {schema: ServingState}}}
        "400": BadInput
        "401": Unauthorized
        "403": Forbidden
        "404": NotFound
        "409": Conflict
    """
    runtime, root, settings = _writable(name)
    params = _parameters()
    version = _version(params.get("version")) or _newest(root)
    activate = params.get("activate", True)
    if not isinstance(activate, bool):
        raise BadRequest("parameters.activate must be true or false.")
    readiness = runtime.readiness
    if activate:
        state = rollout.activate(root, version, _syncing(runtime, readiness), lambda: _synced_active(runtime),
                                 settings.model_load_timeout_s, settings.model_versions_loaded)
    else:
        state = rollout.load(root, version, _syncing(runtime, readiness), settings.model_load_timeout_s,
                             settings.model_versions_loaded)
    return jsonify(_state_body(state))


@bp.post(UNLOAD)
def unload(name: str) -> Response:
    """Drop a version that is not active from every service (and from the canary).
    ---
    post:
      summary: Unload a model version everywhere (never the active one)
      tags: [model repository]
      security: [{bearer: []}, {apiKey: []}]
      requestBody: {content: {application/json: {schema: RepositoryRequest}}}
      responses:
        "200": {description: The serving state now, content: {application/json: {schema: ServingState}}}
        "400": BadInput
        "401": Unauthorized
        "403": Forbidden
        "409": Conflict
    """
    runtime, root, settings = _writable(name)
    version = _version(_parameters().get("version"))
    if not version:
        raise BadRequest("parameters.version names the version to unload.")
    state = repository.read_state(root)
    if version == state.active:
        raise VersionConflict(f"{version} is the active version; activate another before unloading it.")
    candidates = [kind for kind in ("canary", "shadow") if (c := getattr(state, kind)) and c.version == version]
    for kind in candidates:  # first no request is sent to it, on every gateway worker; then it is dropped
        repository.set_candidate(root, kind, None)
    if candidates:
        time.sleep(2 * settings.model_poll_s + 0.2)
    state = repository.drop_version(root, version)
    runtime.sync(state)
    return jsonify(_state_body(state))


@bp.post(CANARY)
@bp.post(SHADOW)
def candidate() -> Response:
    """Give a candidate version a share of the traffic: the canary answers that share of the clients (sticky per API
    key, X-Client-Id or address); the shadow gets a copy of that share of the requests, off the response path.
    ---
    post:
      summary: Set the canary or the shadow (version and percent; percent 0 or version null removes it)
      tags: [model repository]
      security: [{bearer: []}, {apiKey: []}]
      requestBody: {content: {application/json: {schema: CandidateRequest}}}
      responses:
        "200": {description: The serving state now, content: {application/json: {schema: ServingState}}}
        "400": BadInput
        "401": Unauthorized
        "403": Forbidden
        "404": NotFound
        "409": Conflict
    """
    kind = "canary" if request.url_rule.rule == CANARY else "shadow"
    runtime, root, settings = _writable(GATEWAY)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "percent" not in body:
        raise BadRequest(f'Send {{"version": "<version>", "percent": <0-100>}} (percent 0 removes the {kind}).')
    version, percent = _version(body.get("version")), body["percent"]
    if not isinstance(percent, (int, float)) or isinstance(percent, bool) or not 0 <= percent <= 100:
        raise BadRequest("percent must be a number between 0 and 100.")
    if version and percent > 0:  # every service holds it before any request is sent to it
        rollout.load(root, version, _syncing(runtime, runtime.readiness), settings.model_load_timeout_s,
                     settings.model_versions_loaded)
    state = repository.set_candidate(root, kind, version, float(percent), settings.model_versions_loaded)
    runtime.sync(state)
    return jsonify(_state_body(state))


@bp.get(COMPARE)
def compare() -> Response:
    """The shadow version against the live answers it shadowed: agreement, per class, and on the records people
    labelled each version's accuracy.
    ---
    get:
      summary: Compare the shadow version with the live one
      tags: [model repository]
      parameters:
        - {name: version, in: query, schema: {type: string}, description: "default: the current shadow version"}
        - since
      responses:
        "200": {description: The comparison, content: {application/json: {schema: {type: object}}}}
        "400": BadInput
        "503": NotReady
    """
    from shared.history import current_history, parse_time

    runtime = current_runtime(GatewayRuntime)
    version = request.args.get("version") or (runtime.serving.shadow.version if runtime.serving.shadow else None)
    if not version:
        raise BadRequest("There is no shadow version: name one with ?version=<version>.")
    since = parse_time(request.args.get("since"), "since")
    return jsonify(compare_answers(version, current_history().shadow_pairs(version, since)))


def compare_answers(version: str, pairs: list) -> dict:
    """Agreement of `version`'s answers with the live ones they shadowed, overall and per live class, and each
    version's accuracy on the records people labelled (Wilson 95% intervals)."""
    from collections import Counter, defaultdict

    from shared.feedback.quality import wilson_interval

    agree = sum(1 for r in pairs if r["label"] == r["live_label"])
    per_class: dict = defaultdict(lambda: [0, 0])
    for r in pairs:
        per_class[r["live_label"]][0] += 1
        per_class[r["live_label"]][1] += r["label"] == r["live_label"]
    labelled = [r for r in pairs if r["true_label"] is not None]
    right = {"live": sum(r["live_label"] == r["true_label"] for r in labelled),
             "shadow": sum(r["label"] == r["true_label"] for r in labelled)}
    return {
        "version": version, "answers": len(pairs), "live_versions": dict(Counter(r["live_version"] for r in pairs)),
        "agreement": agree / len(pairs) if pairs else None, "agreement_interval": wilson_interval(agree, len(pairs)),
        "per_class": {label: {"answers": n, "agreement": k / n} for label, (n, k) in sorted(per_class.items())},
        "degraded": sum(1 for r in pairs if r["degraded"]),
        "labelled": len(labelled),
        "accuracy": {side: ({"accuracy": k / len(labelled), "interval": wilson_interval(k, len(labelled))}
                            if labelled else None) for side, k in right.items()},
    }


def _writable(name: str) -> tuple[GatewayRuntime, Path, Settings]:
    """The runtime, models folder and settings, once the caller is an admin, the model is the stack and this gateway
    may write serving.json."""
    auth.require_admin()
    if name != GATEWAY:
        raise VersionConflict(f"A member's versions follow the ensemble's: load and unload the model {GATEWAY!r}, "
                              f"not {name!r} (its members load the version with it).")
    settings: Settings = current_app.config["SETTINGS"]
    root = Path(settings.models_dir)
    if not os.access(root, os.W_OK):
        raise VersionConflict(f"{root} is read-only for this gateway, so it cannot change serving.json: run "
                              "`python -m shared models activate|rollback|canary` where the models folder is "
                              "writable (the host of a compose or Swarm bind mount); the services follow it.",
                              code="read_only_models")
    return current_runtime(GatewayRuntime), root, settings


def _parameters() -> dict:
    body = request.get_json(silent=True) if request.content_length else {}
    if body is None or not isinstance(body, dict) or not isinstance(body.get("parameters", {}), dict):
        raise BadRequest('Send JSON like {"parameters": {"version": "<version>"}} (or no body).')
    return body.get("parameters", {})


def _version(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"A version is a string like the ones GET /v2/repository/index lists; got {value!r:.60}.")
    return value


def _newest(root: Path) -> str:
    versions = repository.list_versions(root)
    if not versions:
        raise VersionConflict(f"{root} holds no version to load.", status=404, code="version_not_found")
    return versions[-1].version


def _syncing(runtime: GatewayRuntime, readiness: rollout.Readiness) -> rollout.Readiness:
    """Readiness that first lets this worker follow serving.json at once (not at its next poll)."""
    def check(version: str) -> tuple[str, str]:
        runtime.sync()
        return readiness(version)
    return check


def _synced_active(runtime: GatewayRuntime) -> str | None:
    runtime.sync()
    return runtime.active


def _state_body(state: repository.ServingState) -> dict:
    body = json_state(state)
    body["gateway_active"] = current_runtime(GatewayRuntime).active
    return body


def json_state(state: repository.ServingState) -> dict:
    import json

    return json.loads(state.to_json())
