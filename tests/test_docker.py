"""The container files agree with each other and with the seed (no docker needed; `make compose-test` runs them)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from shared.config import COMPOSE_HOSTS, DEFAULT_PORTS, GATEWAY, MEMBERS

ROOT = Path(__file__).resolve().parent.parent
MEMBER_OWN_BLOCK = "\nENV SERVICE_NAME="


def dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


def instructions(text: str) -> str:
    """The Dockerfile without its comments: what the builder's layer cache sees."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_member_images_share_everything_but_their_last_block() -> None:
    prefixes = {name: instructions(dockerfile(name)).split(MEMBER_OWN_BLOCK)[0] for name in MEMBERS}
    assert all("rm /tmp/torch.txt" in prefix for prefix in prefixes.values())
    assert len(set(prefixes.values())) == 1, "the three member Dockerfiles must be identical up to their own last block"


def test_all_four_images_share_everything_before_their_requirements() -> None:
    prefixes = {instructions(dockerfile(name)).split("\nCOPY requirements/")[0] for name in (*MEMBERS, GATEWAY)}
    assert len(prefixes) == 1


def test_gateway_image_has_no_torch() -> None:
    text = instructions(dockerfile(GATEWAY))
    assert "requirements/serve.txt" in text
    assert "ml.txt" not in text and "torch" not in text.lower()


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_dockerfile_runs_as_non_root_on_the_seed_port_with_a_healthcheck(service: str) -> None:
    text = instructions(dockerfile(service))
    port = DEFAULT_PORTS[service]
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert re.search(r"^USER app$", text, re.M)
    assert f"EXPOSE {port}\n" in text and f"ENV SERVICE_NAME={service}" in text
    assert "/v2/health/ready" in text and "HEALTHCHECK" in text
    assert 'CMD ["sh", "-c", "exec gunicorn -c services/$SERVICE_NAME/gunicorn.conf.py"]' in text
    assert (ROOT / "services" / service / "gunicorn.conf.py").is_file()


def test_member_images_pick_the_torch_index_by_build_arg() -> None:
    for name in MEMBERS:
        assert "ARG TORCH_INDEX_URL=https://pypi.org/simple" in dockerfile(name)


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_compose_keeps_the_seed_addresses_and_ports(compose: dict, service: str) -> None:
    spec = compose["services"][service]
    port = DEFAULT_PORTS[service]
    host = COMPOSE_HOSTS[service].replace("172.16.238", "${SUBNET_PREFIX:-172.16.238}")
    assert spec["networks"]["classifier"]["ipv4_address"] == host
    assert spec["ports"] == [f"${{PUBLISH_ADDR:-0.0.0.0}}:${{HOST_PORT_{service.upper()}:-{port}}}:{port}"]
    assert f"127.0.0.1:{port}/v2/health/ready" in " ".join(spec["healthcheck"]["test"])
    assert spec["build"]["dockerfile"] == f"services/{service}/Dockerfile"
    assert spec["user"] == "10001:10001" and spec["restart"] == "unless-stopped"
    assert "cpus" in spec and "mem_limit" in spec
    assert "${MODELS_PATH:-./models}:/models:ro" in spec["volumes"]


def test_compose_gateway_waits_for_healthy_members_and_keeps_history_in_a_volume(compose: dict) -> None:
    gateway = compose["services"][GATEWAY]
    assert gateway["depends_on"] == {name: {"condition": "service_healthy"} for name in MEMBERS}
    assert "history:/data" in gateway["volumes"] and "history" in compose["volumes"]
    assert gateway["environment"]["HISTORY_DB"] == "/data/history.sqlite3"
    urls = dict(pair.split("=", 1) for pair in gateway["environment"]["MEMBER_URLS"].split(","))
    assert set(urls) == set(MEMBERS)
    assert compose["networks"]["classifier"]["ipam"]["config"] == [{"subnet": "${SUBNET_PREFIX:-172.16.238}.0/24"}]


def test_build_context_leaves_out_the_venv_and_models() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*"):][:4] == ["*", "!requirements/", "!shared/", "!services/"]


def test_base_image_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "docker" / "build-base-image.sh")], check=True)


def test_ci_runs_the_compose_round_trip_after_the_tests() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines.index("make compose-test") > lines.index("make test")
