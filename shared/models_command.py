"""`python -m shared models list|activate|rollback|canary|shadow`: the model repository from the command line.

It writes MODELS/serving.json (so it runs where the models folder is writable: this machine for `serve`, the host
of a compose or Swarm bind mount, a pod with the volume mounted read-write on Kubernetes) and watches the gateway's
repository index over HTTP (MODELS_GATEWAY_URL or --gateway) while every service loads the version. Where no
gateway answers it only writes serving.json, and says so: the services follow it within MODEL_POLL_S.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shared import repository, rollout
from shared.config import Settings
from shared.errors import VersionConflict
from shared.serving.auth import member_key

HELP = """\
Versions live side by side in MODELS/versions/<version>/ (`train` adds one); MODELS/serving.json says
which one answers. Every service follows that file: activate loads the version in every member and the
gateway beside the active one, switches once all of them hold it, and keeps the old one loaded, so an
activation or rollback under load drops nothing. A version that fails to load (a tampered file, a
missing learner) is taken out again with the reason, and the old version keeps serving.
"""


def add_parser(parser: argparse.ArgumentParser, models: Path) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # on every subcommand: `models activate V --models M`
    common.add_argument("--models", type=Path, default=models, help="model repository (default: %(default)s)")
    common.add_argument("--gateway", default=None, help="gateway to watch (default: MODELS_GATEWAY_URL)")
    common.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for every service (default: MODEL_LOAD_TIMEOUT_S)")
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    sub.add_parser("list", parents=[common], help="the versions, which is active, loaded, previous, canary")
    p = sub.add_parser("activate", parents=[common], help="load a version everywhere, then switch to it")
    p.add_argument("version")
    sub.add_parser("rollback", parents=[common], help="activate the version that was active before")
    for kind, what in (("canary", "answer a share of the clients with a candidate version (sticky per client)"),
                       ("shadow", "copy a share of the requests to a candidate version, off the response path")):
        p = sub.add_parser(kind, parents=[common], help=what)
        p.add_argument("version", nargs="?", default=None)
        p.add_argument("--percent", type=float, default=None, help="share, 0-100 (0 or --off removes it)")
        p.add_argument("--off", action="store_true", help=f"remove the {kind}")
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    root = Path(args.models)
    if args.models_command == "list":
        print(listing(root))
        return 0
    key = member_key(settings)
    gateway = rollout.GatewayIndex(args.gateway or settings.models_url,
                                   {"Authorization": f"Bearer {key}"} if key else {})
    timeout = args.timeout or settings.model_load_timeout_s
    keep = settings.model_versions_loaded
    if args.models_command in ("canary", "shadow"):
        return _candidate(args.models_command, root, args, gateway, timeout, keep)
    rollback = args.models_command == "rollback"
    rolled_back_from = repository.read_state(root).active if rollback else None
    version = repository.rollback_target(root) if rollback else args.version
    if gateway.entries() is None:
        repository.set_active(root, version, keep)
        print(f"{version} is active in {root / repository.POINTER}. No gateway answered at {gateway.url}: the "
              f"services switch on their own within MODEL_POLL_S, once each holds it (unchecked here).")
    else:
        rollout.activate(root, version, gateway.readiness, gateway.active, timeout, keep, say=_say)
        print(f"{version} is active and the gateway answers with it.")
    if rolled_back_from:
        repository.forget_previous(root, rolled_back_from)
    return 0


def _candidate(kind: str, root: Path, args: argparse.Namespace, gateway: rollout.GatewayIndex, timeout: float,
               keep: int) -> int:
    if args.off or args.percent == 0:
        repository.set_candidate(root, kind, None)
        print(f"No {kind}: the active version answers every request, alone.")
        return 0
    if not args.version or args.percent is None or not 0 < args.percent <= 100:
        raise VersionConflict(f"Name the version and its share: models {kind} <version> --percent P "
                                         "(0 < P <= 100), or --off.", status=400, code="bad_percent")
    if gateway.entries() is not None:  # loaded everywhere before any request goes to it
        rollout.load(root, args.version, gateway.readiness, timeout, keep, say=_say)
    repository.set_candidate(root, kind, args.version, args.percent, keep)
    share = ("answers {p}% of the clients (sticky per API key, X-Client-Id or address)" if kind == "canary" else
             "gets a copy of {p}% of the requests; compare: GET /v1/versions/compare")
    print(f"{args.version} {share.format(p=f'{args.percent:g}')}.")
    return 0


def listing(root: Path) -> str:
    """One line per version, newest last: id, trained at, its role, what it was trained on, synthetic parts."""
    from shared import weights

    state = repository.read_state(root)
    versions = repository.list_versions(root)
    if not versions:
        return f"No model versions in {root}: python -m shared train --data <images> --out {root}"
    lines = [f"{'version':<14}{'trained at':<27}role"]
    for info in versions:
        roles = [role for role, on in (("ACTIVE", info.version == state.active),
                                       ("loaded", info.version in state.loaded and info.version != state.active),
                                       ("previous", info.version in state.previous)) if on]
        for kind in ("canary", "shadow"):
            candidate = getattr(state, kind)
            if candidate is not None and candidate.version == info.version:
                roles.append(f"{kind} {candidate.percent:g}%")
        manifest = json.loads((info.path / "manifest.json").read_text())
        note = weights.parts_note(weights.manifest_parts(manifest))
        layout = " (single-folder layout)" if info.legacy else ""
        lines.append(f"{info.version:<14}{info.created_at or '?':<27}{', '.join(roles) or '-'}{layout}"
                     f"{'  [' + note + ']' if note else ''}")
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr)
