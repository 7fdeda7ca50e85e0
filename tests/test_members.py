"""The member table: names, ports and addresses in one place; members added at run time; Settings defaults from it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from shared import deploy, members
from shared.config import Settings
from shared.members import GATEWAY, MemberSpec


@pytest.fixture
def extra_member() -> Iterator[MemberSpec]:
    """A fourth member, registered for one test."""
    spec = members.register_member(MemberSpec("clip_knn_double", 5010, "172.16.238.20", extractor="clip",
                                              learner="shared.learning.learners:logreg_on_embeddings"))
    yield spec
    members.unregister_member(spec.name)


def test_the_built_in_members_in_table_order() -> None:
    assert members.member_names() == ("ocr_nb", "clip_svm", "clip_logreg")
    assert [s.name for s in members.services()] == ["ocr_nb", "clip_svm", "clip_logreg", GATEWAY]
    assert {s.name: s.port for s in members.services()} == {"ocr_nb": 5000, "clip_svm": 5001, "clip_logreg": 5002,
                                                            GATEWAY: 5003}
    assert members.service(GATEWAY).compose_host == "172.16.238.13"
    assert {name: members.member(name).extractor for name in members.member_names()} == {
        "ocr_nb": "ocr", "clip_svm": "clip", "clip_logreg": "clip"}


def test_unknown_member_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Unknown member 'knn'; expected one of ocr_nb, clip_svm, clip_logreg"):
        members.member("knn")


def test_a_name_is_registered_once() -> None:
    for name in ("ocr_nb", GATEWAY):
        with pytest.raises(ValueError, match="already registered"):
            members.register_member(MemberSpec(name, 1, "h"))


def test_each_member_builds_its_learner() -> None:
    pipeline = members.member("clip_logreg").build_learner(seed=3)
    assert pipeline.named_steps["logreg"].random_state == 3
    assert hasattr(members.member("ocr_nb").build_learner(), "predict_proba")


def test_a_registered_member_joins_the_table_and_the_settings_defaults(extra_member: MemberSpec) -> None:
    assert members.member_names()[-1] == extra_member.name and members.services()[-1].name == GATEWAY
    settings = Settings()
    assert settings.port_map()[extra_member.name] == 5010
    assert settings.member_url_map()[extra_member.name] == "http://127.0.0.1:5010"


def test_settings_default_to_the_table_and_explicit_values_win() -> None:
    settings = Settings()
    assert settings.port_map() == {s.name: s.port for s in members.services()}
    assert settings.member_url_map() == {"ocr_nb": "http://127.0.0.1:5000", "clip_svm": "http://127.0.0.1:5001",
                                         "clip_logreg": "http://127.0.0.1:5002"}
    given = Settings(member_urls="ocr_nb=http://a:1/", service_ports="ocr_nb=7000")
    assert given.member_url_map() == {"ocr_nb": "http://a:1"} and given.port_map() == {"ocr_nb": 7000}


def test_the_table_imports_nothing_heavy() -> None:
    # The images' healthcheck reads the service's port through it every few seconds.
    code = "import sys, shared.members, shared.config; sys.exit(bool({'numpy', 'sklearn', 'torch'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_registered_member_gets_its_deploy_files(extra_member: MemberSpec, tmp_path: Path) -> None:
    deploy.write(tmp_path)
    name, port, host = extra_member.name, extra_member.port, "clip-knn-double"
    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())["services"]
    assert compose[name]["build"]["target"] == name and compose[name]["ports"][0].endswith(f":{port}")
    assert compose[name]["networks"]["classifier"]["ipv4_address"] == "${SUBNET_PREFIX:-172.16.238}.20"
    assert compose[GATEWAY]["depends_on"][name] == {"condition": "service_healthy"}
    swarm = yaml.safe_load((tmp_path / "deploy/swarm/stack.yml").read_text())["services"]
    assert swarm[name]["image"] == f"classifier/{name}:${{IMAGE_TAG:-latest}}"
    k8s = list(yaml.safe_load_all((tmp_path / f"deploy/k8s/{host}.yaml").read_text()))
    assert {doc["kind"] for doc in k8s} == {"Deployment", "Service", "PodDisruptionBudget"}
    assert f"{host}.yaml" in yaml.safe_load((tmp_path / "deploy/k8s/kustomization.yaml").read_text())["resources"]
    gateway = yaml.safe_load_all((tmp_path / "deploy/k8s/stacking.yaml").read_text())
    k8s_env = {e["name"]: e["value"] for e in next(gateway)["spec"]["template"]["spec"]["containers"][0]["env"]}
    dockerfile = (tmp_path / "docker/Dockerfile").read_text()
    assert f"FROM member AS {name}\nENV SERVICE_NAME={name}\nEXPOSE {port}\n" in dockerfile
    urls = {"compose": compose[GATEWAY]["environment"]["MEMBER_URLS"], "k8s": k8s_env["MEMBER_URLS"],
            "swarm": swarm[GATEWAY]["environment"]["MEMBER_URLS"],
            "Dockerfile": re.search(r"MEMBER_URLS=(\S+)", dockerfile)[1]}
    for where, value in urls.items():
        expected = f"http://{name if where == 'swarm' else host}:{port}"
        assert dict(pair.split("=", 1) for pair in value.split(","))[name] == expected, where
    assert f'service("{name}").create_app()' in (tmp_path / f"services/{name}/wsgi.py").read_text()
    assert (tmp_path / f"services/{name}/gunicorn.conf.py").is_file()
