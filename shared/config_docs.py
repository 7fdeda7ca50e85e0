"""docs/configuration.md, generated: the runtime settings (from Settings' fields) and the deploy-time variables.

The deploy-time variables are read by docker-compose, the Swarm stack, the Dockerfile, the base-image script and
the Makefile, never by Python: DEPLOY_VARIABLES declares them here, as data, with the files that read them (a
test checks that each file does). Regenerate the page with `python -m shared settings --markdown`.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import NamedTuple

from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from shared.config import FLAG_WORDS, Settings

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
REGENERATE = "python -m shared settings --markdown"

COMPOSE, SWARM, DOCKERFILE = "docker-compose.yml", "deploy/swarm/stack.yml", "docker/Dockerfile"
BASE_SCRIPT, MAKEFILE = "docker/build-base-image.sh", "Makefile"


class DeployVariable(NamedTuple):
    """A variable read at build or deploy time by the files named in `read_in` (repository paths)."""

    name: str
    read_in: tuple[str, ...]
    default: str
    meaning: str


DEPLOY_VARIABLES: tuple[DeployVariable, ...] = (
    # where the models come from, and the images
    DeployVariable("MODELS_PATH", (COMPOSE, SWARM, MAKEFILE),
                   "compose: `./models`; Swarm: none (required); make: the absolute path of `MODELS`",
                   "Host folder with manifest.json, learners/, meta/ and weights/, mounted read-only at /models in "
                   "every container (Swarm: an ABSOLUTE path, present on every node a task may land on)"),
    DeployVariable("CONTAINER_WEIGHTS_DIR", (COMPOSE, SWARM), "/models/weights",
                   "The members' `WEIGHTS_DIR`; /opt/weights for weights baked into the images (`BAKE_WEIGHTS`)"),
    DeployVariable("IMAGE_TAG", (COMPOSE, SWARM), "latest", "Tag of the classifier/<service> images"),
    # build arguments
    DeployVariable("BASE_IMAGE", (DOCKERFILE, COMPOSE, BASE_SCRIPT), "python:3.11-slim-bookworm",
                   "Base of the four images; where no registry can be reached, `make base-image` builds a local "
                   "Debian bookworm one under this tag"),
    DeployVariable("PIP_INDEX_URL", (DOCKERFILE, COMPOSE), "https://pypi.org/simple",
                   "Build: where the Python packages come from"),
    DeployVariable("TORCH_INDEX_URL", (DOCKERFILE, COMPOSE), "https://pypi.org/simple",
                   "Build, members: where torch/torchvision come from. PyPI's Linux wheels are the CUDA build (about "
                   "3 GB more); https://download.pytorch.org/whl/cpu gives CPU-only wheels"),
    DeployVariable("BAKE_WEIGHTS", (DOCKERFILE, COMPOSE, MAKEFILE), "",
                   "Build, members: empty = no weights in the image (mount them); `synthetic` or `real` = "
                   "`python -m shared weights` at build time into /opt/weights, the image's default `WEIGHTS_DIR` "
                   "(make up / swarm-up then need no MODELS/weights/)"),
    DeployVariable("BUILD_CA_CERTS", (DOCKERFILE, COMPOSE, MAKEFILE),
                   "compose: empty; make: base64 of `/usr/local/share/ca-certificates/*.crt` (empty if none)",
                   "Build: the host's extra CAs (a TLS-intercepting proxy's), trusted by the pip steps (and "
                   "`BAKE_WEIGHTS=real`'s download) through a temporary bundle removed within the same RUN step; "
                   "the images keep Debian's CAs only. Shows in `docker history`, as build args do: CA certificates "
                   "are public. `BUILD_CA_CERTS= make ...` leaves them out"),
    # docker-compose
    DeployVariable("SUBNET_PREFIX", (COMPOSE,), "172.16.238",
                   "The /24 of the bridge network (members .10-.12, gateway .13, the history's PostgreSQL .14)"),
    DeployVariable("PUBLISH_ADDR", (COMPOSE,), "0.0.0.0",
                   "Host address the ports are published on (127.0.0.1: this host only)"),
    DeployVariable("HOST_PORT_OCR_NB", (COMPOSE,), "5000", "Host port of ocr_nb"),
    DeployVariable("HOST_PORT_CLIP_SVM", (COMPOSE,), "5001", "Host port of clip_svm"),
    DeployVariable("HOST_PORT_CLIP_LOGREG", (COMPOSE,), "5002", "Host port of clip_logreg"),
    DeployVariable("HOST_PORT_STACKING", (COMPOSE,), "5003", "Host port of the gateway"),
    DeployVariable("MEMBER_CPUS", (COMPOSE, SWARM), "1.0", "CPU limit of each member container (task)"),
    DeployVariable("MEMBER_MEM_LIMIT", (COMPOSE, SWARM), "3g", "Memory limit of each member container (task)"),
    DeployVariable("GATEWAY_CPUS", (COMPOSE, SWARM), "0.5", "CPU limit of the gateway container (task)"),
    DeployVariable("GATEWAY_MEM_LIMIT", (COMPOSE, SWARM), "1g", "Memory limit of the gateway container (task)"),
    # runtime settings the deploy files pass to the containers, with their own defaults
    DeployVariable("TORCH_THREADS", (COMPOSE, SWARM), "1",
                   "Passed to the members as the `TORCH_THREADS` setting (the services share the cores)"),
    DeployVariable("WEB_CONCURRENCY", (COMPOSE, SWARM), "1", "Passed to every service as `WEB_CONCURRENCY`"),
    DeployVariable("GATEWAY_RUNNING", (SWARM,), "4",
                   "Passed to the gateway as `GATEWAY_RUNNING`: about what the members' replicas compute together "
                   "(2 ocr_nb tasks x 2 reads); raise it with the replicas"),
    # Docker Swarm
    DeployVariable("OCR_NB_REPLICAS", (SWARM,), "2", "Tasks of ocr_nb"),
    DeployVariable("CLIP_SVM_REPLICAS", (SWARM,), "1", "Tasks of clip_svm"),
    DeployVariable("CLIP_LOGREG_REPLICAS", (SWARM,), "1", "Tasks of clip_logreg"),
    DeployVariable("STACKING_REPLICAS", (SWARM,), "1",
                   "Tasks of the gateway (at most one per node: its host-mode port)"),
    DeployVariable("STACKING_PORT", (SWARM, MAKEFILE), "5003",
                   "Host port of the gateway, on every node that runs a gateway task"),
    DeployVariable("MEMBER_CPU_RESERVATION", (SWARM,), "0.25",
                   "CPUs the scheduler reserves per member task (a task whose reservations fit no node stays pending)"),
    DeployVariable("MEMBER_MEM_RESERVATION", (SWARM,), "512m", "Memory the scheduler reserves per member task"),
    DeployVariable("GATEWAY_CPU_RESERVATION", (SWARM,), "0.1", "CPUs the scheduler reserves for the gateway task"),
    DeployVariable("GATEWAY_MEM_RESERVATION", (SWARM,), "128m", "Memory the scheduler reserves for the gateway task"),
    DeployVariable("UPDATE_MONITOR", (SWARM,), "20s",
                   "How long a new task must stay up before a rolling update goes on (else: rollback)"),
    # the history's PostgreSQL (docs/history.md)
    DeployVariable("POSTGRES_PASSWORD", (COMPOSE,), "classifier",
                   "Password of the history database, set on its first start (its volume keeps it); the gateway's "
                   "HISTORY_DB carries it. Change it before the stack is reachable from anywhere but this host"),
    DeployVariable("POSTGRES_IMAGE", (COMPOSE, SWARM), "classifier/postgres:latest",
                   "The history database's image: built from Debian's package (docker/postgres), or the official "
                   "`postgres:15`, which takes the same variables"),
    DeployVariable("POSTGRES_CPUS", (COMPOSE, SWARM), "0.5", "CPU limit of the history database's container (task)"),
    DeployVariable("POSTGRES_MEM_LIMIT", (COMPOSE, SWARM), "512m",
                   "Memory limit of the history database's container (task)"),
    DeployVariable("HISTORY_DB_SECRETS", (SWARM,), "none (required; make: `.cache/swarm-secrets`)",
                   "ABSOLUTE path of a folder holding `password` and `url`: the history database's password and the "
                   "gateways' HISTORY_DB, made into swarm secrets (make swarm-up writes them once, a random password)"),
    DeployVariable("POSTGRES_PLACEMENT", (SWARM,), "node.role == manager",
                   "Placement constraint of the history database's task: its data is a local volume, so pin it to "
                   "one node (a node label with several managers)"),
    # the fallback base image
    DeployVariable("DEBIAN_SUITE", (BASE_SCRIPT,), "bookworm", "Debian release debootstrap builds the base image from"),
    DeployVariable("DEBIAN_MIRROR", (BASE_SCRIPT,), "http://deb.debian.org/debian", "Debian mirror debootstrap uses"),
    DeployVariable("NO_PULL", (BASE_SCRIPT,), "0", "1 = never try `docker pull BASE_IMAGE`; build it with debootstrap"),
    DeployVariable("PULL_TIMEOUT", (BASE_SCRIPT,), "120", "Seconds `docker pull BASE_IMAGE` may take"),
    DeployVariable("FORCE", (BASE_SCRIPT,), "0", "1 = rebuild the base image even when the tag exists"),
    # make
    DeployVariable("PY", (MAKEFILE,), ".venv/bin/python", "The Python every target runs"),
    DeployVariable("DATA", (MAKEFILE,), "`$DATASETS_DIR/screenshots` (../shared/datasets/screenshots)",
                   "make train / evaluate: the image folder or CSV"),
    DeployVariable("MODELS", (MAKEFILE,), "models",
                   "make train / evaluate / serve / up / swarm-up: the artifact folder"),
    DeployVariable("WEIGHTS", (MAKEFILE,), "models/weights",
                   "make weights / train / evaluate / serve: the weights folder"),
    DeployVariable("SYNTHETIC", (MAKEFILE,), "", "make serve: non-empty = `--synthetic` (the offline option)"),
    DeployVariable("COMPOSE", (MAKEFILE,), "docker-compose", "The compose command; `docker compose` for v2"),
    DeployVariable("DOCKER_BUILDKIT", (MAKEFILE,), "1 when `docker buildx` exists, else 0",
                   "BuildKit or the classic builder (the docker CLI refuses BuildKit without buildx)"),
    DeployVariable("STACK", (MAKEFILE,), "classifier", "make swarm-up / swarm-down: the stack's name"),
)

INTRO = f"""\
# Configuration

<!-- Generated by `{REGENERATE}` from shared/config.py and shared/config_docs.py: edit those, not this page. -->

Every runtime setting is an environment variable, read once into `shared.config.Settings`. An empty variable
means its default. A bad value stops the command or service at start, with a message naming each bad variable,
the value received and what was expected. `python -m shared settings` prints the settings in effect.
"""

DEPLOY_INTRO = """\
## Deploy-time variables

Read by docker-compose, the Swarm stack, the Dockerfile's build arguments, `docker/build-base-image.sh` and the
Makefile, from the environment (compose: also an `.env` file next to it; make: also `make VAR=value`). The
containers' runtime settings above can be set in the compose and Swarm files' `environment:`.
"""


def markdown() -> str:
    """The whole page: intro, runtime settings, deploy-time variables."""
    return "\n".join([INTRO, "## Runtime settings\n", settings_table(), "", DEPLOY_INTRO, deploy_table()]) + "\n"


def settings_table() -> str:
    """One row per Settings field: variable, default, accepted values, meaning."""
    rows = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    defaults = Settings().to_env()
    for name, variable in Settings.env_names().items():
        info = Settings.model_fields[name]
        rows.append(f"| `{variable}` | {_code(defaults[variable])} | {accepts(info)} | {_cell(info.description)} |")
    return "\n".join(rows)


def deploy_table() -> str:
    """One row per deploy-time variable: variable, default, where it is read, meaning."""
    rows = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for var in DEPLOY_VARIABLES:
        default = var.default if "`" in var.default else _code(var.default)
        read_by = ", ".join(f"`{path}`" for path in var.read_in)
        rows.append(f"| `{var.name}` | {default} | {read_by} | {_cell(var.meaning)} |")
    return "\n".join(rows)


def accepts(info: FieldInfo) -> str:
    """What a field accepts, in words: its choices, or its type and bounds."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "accepts" in extra:
        return str(extra["accepts"])
    kind = info.annotation  # pydantic keeps Annotated metadata in info.metadata, not here
    if typing.get_origin(kind) is typing.Literal:
        return " \\| ".join(f"`{choice}`" for choice in typing.get_args(kind))
    if kind is bool:
        return FLAG_WORDS
    words = {int: "integer", float: "number", Path: "path", str: "text"}[kind]
    bounds = [_bound(item) for item in info.metadata if isinstance(item, (Ge, Gt, Le, Lt))]
    return " ".join([words, ", ".join(bounds)]).strip()


def _bound(item: Ge | Gt | Le | Lt) -> str:
    if isinstance(item, Ge):
        return f"≥ {item.ge}"
    if isinstance(item, Lt):
        return f"< {item.lt}"
    return f"> {item.gt}" if isinstance(item, Gt) else f"≤ {item.le}"


def _code(text: str) -> str:
    return f"`{text}`" if text else "*empty*"


def _cell(text: str | None) -> str:
    """Text fit for a table cell: pipes escaped, and <...> outside `code` shown as text, not taken for HTML."""
    parts = (text or "").replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(parts))
