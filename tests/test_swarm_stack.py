"""deploy/swarm/stack.yml agrees with the member table and docker-compose.yml (no docker needed; the live check is
`python -m tests.swarm_check`)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from shared import members
from shared.members import GATEWAY, member_names

MEMBERS = member_names()
SERVICES = (*MEMBERS, GATEWAY)
ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yml"
DEFAULT_REPLICAS = {"ocr_nb": 2, "clip_svm": 1, "clip_logreg": 1, GATEWAY: 1}
DEFAULT = re.compile(r"^\$\{(\w+):-([^}]*)\}$")  # ${NAME:-default}


def env_default(value: object) -> tuple[str, str]:
    """The variable and its default of a `${NAME:-default}` value."""
    match = DEFAULT.match(str(value))
    assert match, f"{value!r} should be ${{NAME:-default}}"
    return match.group(1), match.group(2)


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(STACK_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_a_swarm_file_format_with_every_service_of_the_table(stack: dict) -> None:
    major, minor = (int(part) for part in str(stack["version"]).split(".")[:2])
    assert (major, minor) >= (3, 8), "max_replicas_per_node needs 3.8"
    assert set(stack["services"]) == {*SERVICES, "postgres"}  # and the history's database


@pytest.mark.parametrize("service", SERVICES)
def test_same_image_and_healthcheck_as_compose(stack: dict, compose: dict, service: str) -> None:
    spec, composed = stack["services"][service], compose["services"][service]
    assert spec["image"] == composed["image"] == f"classifier/{service}:${{IMAGE_TAG:-latest}}"
    assert spec["healthcheck"]["test"] == composed["healthcheck"]["test"]
    assert "s.port_map()[s.service_name]}/v2/health/ready" in " ".join(spec["healthcheck"]["test"])
    for key in ("interval", "timeout", "retries", "start_period"):
        assert spec["healthcheck"][key] == composed["healthcheck"][key], key
    assert spec["user"] == composed["user"] == "10001:10001"
    assert spec["stop_grace_period"] == composed["stop_grace_period"]


@pytest.mark.parametrize("service", MEMBERS)
def test_members_get_the_compose_environment(stack: dict, compose: dict, service: str) -> None:
    assert stack["services"][service]["environment"] == compose["services"][service]["environment"]


@pytest.mark.parametrize("service", SERVICES)
def test_dnsrr_and_init_everywhere(stack: dict, service: str) -> None:
    spec = stack["services"][service]
    assert spec["init"] is True
    assert spec["deploy"]["endpoint_mode"] == "dnsrr", "no IPVS: a VIP would not answer"
    assert spec["networks"] == ["classifier"]


def test_only_the_gateway_publishes_a_port_in_host_mode(stack: dict) -> None:
    for name in MEMBERS:
        assert "ports" not in stack["services"][name]
    (port,) = stack["services"][GATEWAY]["ports"]
    assert port["mode"] == "host" and port["protocol"] == "tcp"
    assert port["target"] == members.service(GATEWAY).port
    assert env_default(port["published"]) == ("STACKING_PORT", str(members.service(GATEWAY).port))
    # A host-mode port is held by one task per node.
    assert stack["services"][GATEWAY]["deploy"]["placement"]["max_replicas_per_node"] == 1


@pytest.mark.parametrize("service", SERVICES)
def test_replicas_from_the_environment(stack: dict, service: str) -> None:
    name, default = env_default(stack["services"][service]["deploy"]["replicas"])
    assert name == f"{service.upper()}_REPLICAS"
    assert int(default) == DEFAULT_REPLICAS[service]


@pytest.mark.parametrize("service", SERVICES)
def test_limits_and_reservations(stack: dict, service: str) -> None:
    resources = stack["services"][service]["deploy"]["resources"]
    cpus = {}
    for kind in ("limits", "reservations"):
        assert set(resources[kind]) == {"cpus", "memory"}, kind
        cpus[kind] = float(env_default(resources[kind]["cpus"])[1])
        assert cpus[kind] > 0
    assert cpus["reservations"] <= cpus["limits"]


def test_member_reservations_fit_two_cores_during_the_check(stack: dict) -> None:
    """tests.swarm_check runs 3 ocr_nb + a start-first clip_svm's 2 tasks + clip_logreg + the gateway on 2 cores."""
    cpus = {name: float(env_default(stack["services"][name]["deploy"]["resources"]["reservations"]["cpus"])[1])
            for name in SERVICES}
    assert 3 * cpus["ocr_nb"] + 2 * cpus["clip_svm"] + cpus["clip_logreg"] + cpus[GATEWAY] <= 2.0


@pytest.mark.parametrize("service", SERVICES)
def test_update_rollback_and_restart(stack: dict, service: str) -> None:
    deploy = stack["services"][service]["deploy"]
    update, rollback, restart = deploy["update_config"], deploy["rollback_config"], deploy["restart_policy"]
    assert update["failure_action"] == "rollback" and update["parallelism"] == 1 and update["monitor"]
    assert rollback["parallelism"] == 1 and rollback["monitor"] and rollback["failure_action"] in ("pause", "continue")
    # Members start the new task before stopping the old; the gateway cannot (its host-mode port).
    order = "stop-first" if service == GATEWAY else "start-first"
    assert update["order"] == rollback["order"] == order
    assert restart["condition"] == "any"


@pytest.mark.parametrize("service", SERVICES)
def test_models_mounted_read_only_from_an_absolute_models_path(stack: dict, service: str) -> None:
    mounts = [v for v in stack["services"][service]["volumes"] if isinstance(v, dict) and v["target"] == "/models"]
    assert len(mounts) == 1
    (mount,) = mounts
    assert mount["type"] == "bind" and mount["read_only"] is True
    assert mount["source"].startswith("${MODELS_PATH:?"), "stacks need an absolute path: required, no ./ default"


def test_gateway_reaches_every_member_by_service_name(stack: dict) -> None:
    env = stack["services"][GATEWAY]["environment"]
    urls = dict(pair.split("=", 1) for pair in env["MEMBER_URLS"].split(","))
    assert urls == {name: f"http://{name}:{members.service(name).port}" for name in MEMBERS}


def test_every_gateway_task_shares_one_postgresql_history_through_secrets(stack: dict) -> None:
    gateway, database = stack["services"][GATEWAY], stack["services"]["postgres"]
    assert gateway["environment"]["HISTORY_DB_FILE"] == "/run/secrets/history_db_url"
    assert "HISTORY_DB" not in gateway["environment"] and gateway["secrets"] == ["history_db_url"]
    assert database["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/history_db_password"
    assert database["secrets"] == ["history_db_password"]
    assert "postgres:/var/lib/postgresql/data" in database["volumes"] and "postgres" in stack["volumes"]
    deploy = database["deploy"]
    assert deploy["replicas"] == 1 and deploy["endpoint_mode"] == "dnsrr" and deploy["placement"]["constraints"]
    assert deploy["update_config"]["order"] == "stop-first"  # one task owns the volume
    assert "pg_isready" in database["healthcheck"]["test"]
    for name, secret in stack["secrets"].items():
        assert secret["file"].startswith("${HISTORY_DB_SECRETS:?"), name  # never a password in the file


def test_an_attachable_overlay_network(stack: dict) -> None:
    assert stack["networks"]["classifier"] == {"driver": "overlay", "attachable": True}


def test_nothing_a_stack_would_ignore(stack: dict) -> None:
    for name, spec in stack["services"].items():
        assert not {"build", "depends_on", "restart", "container_name"} & set(spec), name
        assert "ipv4_address" not in str(spec.get("networks")), name
