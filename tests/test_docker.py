"""The container files agree with each other and with the seed (no docker needed; `make compose-test` runs them)."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from shared import members
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order
ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
MEMBER_STAGE = "member"  # what the three member targets are built FROM


def instructions(text: str) -> str:
    """Dockerfile text without its comments and blank lines: what the builder's layer cache sees."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


def stages() -> dict[str, tuple[str, str]]:
    """Each stage of docker/Dockerfile, in file order: name -> (the stage it is FROM, its instructions)."""
    found: dict[str, tuple[str, str]] = {}
    for block in re.split(r"^(?=FROM )", instructions(DOCKERFILE.read_text()), flags=re.M)[1:]:
        parent, name = re.match(r"FROM (\S+) AS (\w+)\n", block).groups()
        found[name] = (parent, block)
    return found


def target(name: str) -> str:
    """The instructions a target is built from: the global ARGs, then its stage's ancestry, base first."""
    all_stages, chain = stages(), []
    while name in all_stages:
        parent, block = all_stages[name]
        chain.insert(0, block)
        name = parent
    return "".join([instructions(DOCKERFILE.read_text()).split("FROM ")[0], *chain])


def image_healthcheck() -> list[str]:
    """The HEALTHCHECK command of docker/Dockerfile, as compose writes a healthcheck's test."""
    text = instructions(DOCKERFILE.read_text()).replace("\\\n", "")
    return ["CMD", *json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", text, re.M)[1])]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_one_dockerfile_with_a_target_per_service() -> None:
    assert not list((ROOT / "services").glob("*/Dockerfile")), "the services build from docker/Dockerfile alone"
    names = list(stages())
    assert {*MEMBERS, GATEWAY} <= set(names)
    # The classic builder builds every stage above the target: the gateway's must not reach the torch layer.
    assert names.index(GATEWAY) < names.index(MEMBER_STAGE) < min(names.index(name) for name in MEMBERS)


def test_classic_builder_can_build_it() -> None:
    text = instructions(DOCKERFILE.read_text())
    assert "--mount" not in text and "--link" not in text and "--chmod" not in text and "<<" not in text


@pytest.mark.parametrize("service", MEMBERS)
def test_member_targets_differ_only_by_name_and_port(service: str) -> None:
    port = members.service(service).port
    assert stages()[service] == (MEMBER_STAGE, f"FROM {MEMBER_STAGE} AS {service}\nENV SERVICE_NAME={service}\n"
                                               f"EXPOSE {port}\n")


def test_members_share_the_torch_layer_and_pick_its_index_by_build_arg() -> None:
    member = target(MEMBER_STAGE)
    assert "ARG TORCH_INDEX_URL=https://pypi.org/simple" in member
    assert "requirements/ml.txt" in member and "rm /tmp/torch.txt" in member and "BAKE_WEIGHTS" in member
    assert "python -m shared.features.ocr /opt/weights" in member  # baked weights come with their CRAFT runtimes


def test_gateway_target_has_no_torch() -> None:
    text = target(GATEWAY)
    assert "requirements/serve.txt" in text
    assert "ml.txt" not in text and "torch" not in text.lower() and "BAKE_WEIGHTS" not in text


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_target_runs_as_non_root_on_the_seed_port_with_a_healthcheck(service: str) -> None:
    text = target(service)
    port = members.service(service).port
    assert text.startswith("ARG BASE_IMAGE=python:3.11-slim-bookworm\nFROM ${BASE_IMAGE} AS base\n")
    assert re.search(r"^USER app$", text, re.M)
    assert f"EXPOSE {port}\n" in text and f"ENV SERVICE_NAME={service}" in text
    assert "/v2/health/ready" in text and "HEALTHCHECK" in text
    assert 'CMD ["sh", "-c", "exec gunicorn -c services/$SERVICE_NAME/gunicorn.conf.py"]' in text
    assert (ROOT / "services" / service / "gunicorn.conf.py").is_file()
    assert (ROOT / "services" / service / "wsgi.py").is_file()


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_compose_keeps_the_seed_addresses_and_ports(compose: dict, service: str) -> None:
    spec = compose["services"][service]
    port = members.service(service).port
    host = members.service(service).compose_host.replace("172.16.238", "${SUBNET_PREFIX:-172.16.238}")
    assert spec["networks"]["classifier"]["ipv4_address"] == host
    assert spec["ports"] == [f"${{PUBLISH_ADDR:-0.0.0.0}}:${{HOST_PORT_{service.upper()}:-{port}}}:{port}"]
    # The image's own healthcheck: the port from the settings (the member table), never written in the file.
    assert spec["healthcheck"]["test"] == image_healthcheck()
    assert "s.port_map()[s.service_name]}/v2/health/ready" in image_healthcheck()[-1]
    assert spec["user"] == "10001:10001" and spec["restart"] == "unless-stopped"
    assert "cpus" in spec and "mem_limit" in spec
    assert "${MODELS_PATH:-./models}:/models:ro" in spec["volumes"]


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_compose_builds_each_service_from_its_target(compose: dict, service: str) -> None:
    build = compose["services"][service]["build"]
    assert (build["context"], build["dockerfile"], build["target"]) == (".", "docker/Dockerfile", service)
    assert set(build["args"]) <= {"BASE_IMAGE", "PIP_INDEX_URL", "TORCH_INDEX_URL", "BAKE_WEIGHTS", "BUILD_CA_CERTS"}
    assert all(re.search(rf"^ARG {arg}=", target(service), re.M) for arg in build["args"])


def run_steps(block: str) -> list[str]:
    """The RUN instructions of a stage's instructions, continuation lines joined."""
    return [step for step in block.replace("\\\n", "").splitlines() if step.startswith("RUN ")]


@pytest.mark.parametrize("service", [*MEMBERS, GATEWAY])
def test_pip_steps_trust_the_build_hosts_cas_for_that_command_only(compose: dict, service: str) -> None:
    """Behind a TLS-intercepting proxy pip needs the host's extra CAs (BUILD_CA_CERTS); the images must not keep them."""
    assert compose["services"][service]["build"]["args"]["BUILD_CA_CERTS"] == "${BUILD_CA_CERTS:-}"
    pip_stages = 0
    for name, (_, block) in stages().items():
        steps = [step for step in run_steps(block) if "pip install" in step]
        if not steps:
            continue
        pip_stages += 1
        assert re.search(r'^ARG BUILD_CA_CERTS=""$', block.split(steps[0])[0], re.M), f"{name}: no ARG before pip"
        for step in steps:
            assert step.count("pip install") == step.count("with-build-cas pip install"), step
    assert pip_stages == 2  # python (serve.txt) and member (torch, ml.txt)
    text = instructions(DOCKERFILE.read_text())
    assert "with-build-cas python -m shared weights --out /opt/weights" in text  # BAKE_WEIGHTS=real downloads
    assert "COPY docker/with-build-cas.sh /usr/local/bin/with-build-cas\n" in target(service)
    # Nothing trusts them for good: no CA file copied in, no ENV pointing at another bundle, the arg never an ENV.
    assert "update-ca-certificates" not in text and "ca-certificates/" not in text
    assert not re.search(r"^ENV .*(BUILD_CA_CERTS|PIP_CERT|SSL_CERT_FILE|REQUESTS_CA_BUNDLE)", text, re.M)
    assert "!docker/with-build-cas.sh" in (ROOT / ".dockerignore").read_text().split()


HELPER = ROOT / "docker" / "with-build-cas.sh"
FAKE_PEM = "-----BEGIN CERTIFICATE-----\nTUlJQ2Zha2U=\n-----END CERTIFICATE-----\n"
SHOW = 'echo "$PIP_CERT|$SSL_CERT_FILE|$REQUESTS_CA_BUNDLE"; cat "$PIP_CERT"; exit 3'


def helper(cas: str, command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, BUILD_CA_CERTS=cas, PIP_CERT="/etc/ssl/certs/ca-certificates.crt")
    return subprocess.run(["sh", str(HELPER), "sh", "-c", command], env=env, capture_output=True, text=True)


def test_with_build_cas_gives_the_command_a_temporary_bundle_and_removes_it() -> None:
    done = helper(base64.b64encode(FAKE_PEM.encode()).decode(), SHOW)
    assert done.returncode == 3, done.stderr  # the command's own status
    paths, bundle = done.stdout.split("\n", 1)
    assert len(set(paths.split("|"))) == 1 and paths.startswith("/tmp/build-cas.")
    assert bundle.endswith(FAKE_PEM)
    debian = Path("/etc/ssl/certs/ca-certificates.crt")
    if debian.is_file():
        assert bundle.startswith(debian.read_text()[:4096])  # Debian's bundle first, the host's PEMs after it
    assert not Path(paths.split("|")[0]).exists()


def test_with_build_cas_without_cas_changes_nothing_and_refuses_garbage() -> None:
    done = helper("", 'echo "$PIP_CERT"')
    assert (done.returncode, done.stdout) == (0, "/etc/ssl/certs/ca-certificates.crt\n")
    done = helper("bm90IGEgY2VydGlmaWNhdGU=", SHOW)  # "not a certificate"
    assert done.returncode == 2 and "not base64 of PEM certificates" in done.stderr and not done.stdout


def test_the_compose_check_finds_a_host_ca_however_the_bundle_wraps_it() -> None:
    from tests.compose_check import host_cas_in, pem_bodies

    body = base64.b64encode(bytes(range(256)) * 3).decode()
    host = f"-----BEGIN CERTIFICATE-----\n{body[:64]}\n{body[64:]}\n-----END CERTIFICATE-----\n"
    other = FAKE_PEM
    rewrapped = "\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    bundle = f"{other}-----BEGIN CERTIFICATE-----\r\n{rewrapped}\r\n-----END CERTIFICATE-----\n"
    assert host_cas_in(bundle, pem_bodies(host)) == {body}
    assert host_cas_in(other, pem_bodies(host)) == set()


def test_compose_gateway_waits_for_healthy_members_and_its_postgresql_history(compose: dict) -> None:
    gateway, database = compose["services"][GATEWAY], compose["services"]["postgres"]
    assert gateway["depends_on"] == {name: {"condition": "service_healthy"} for name in (*MEMBERS, "postgres")}
    assert gateway["environment"]["HISTORY_DB"] == \
        "postgresql://classifier:${POSTGRES_PASSWORD:-classifier}@postgres:5432/classifier"
    assert database["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-classifier}"
    assert database["build"]["dockerfile"] == "docker/postgres/Dockerfile"
    assert "postgres:/var/lib/postgresql/data" in database["volumes"] and "postgres" in compose["volumes"]
    assert "pg_isready" in database["healthcheck"]["test"] and database["restart"] == "unless-stopped"
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
