"""deploy/k8s: every manifest passes the Kubernetes API schemas (strict, offline) and agrees with the project.

No cluster here: kubernetes-validate (requirements/dev.txt) carries the schemas of each Kubernetes release in its
wheel, so this runs without a network. Strict mode rejects any field the API does not know (a misspelled one would
otherwise be dropped by the API server without a word). The rest holds the manifests to the member table, to
docker-compose.yml and to the settings: names, ports, probes, env, limits, volumes, disruption budgets, autoscaler.
"""
from __future__ import annotations

import copy
import functools
import math
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from shared import members
from shared.config import Settings
from shared.members import GATEWAY

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# The oldest release the manifests are meant for, and the newest the pinned validator carries.
KUBERNETES_VERSIONS = ("1.29", "1.37")
SERVICES = [spec.name for spec in members.services()]
MEMBERS = members.member_names()
MODELS_CLAIM = "classifier-models"
HISTORY_SECRET, HISTORY_SECRETS_DIR = "classifier-history-db", Path("/run/secrets/history-db")
READY, LIVE = "/v2/health/ready", "/v2/health/live"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 label: containers, volumes, most names
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names: must start with a letter
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA_SVC_NAME, at most 15 characters
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def kube_name(service: str) -> str:
    """The Kubernetes name of a service of the table: underscores are not allowed in DNS names (ocr_nb -> ocr-nb)."""
    return service.replace("_", "-")


def validator() -> Any:
    """kubernetes_validate, or a failure that says how to get it (never a skip: CI must run these)."""
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    if kubernetes_validate is None:
        pytest.fail("kubernetes-validate is not installed, so deploy/k8s cannot be schema-checked: run `make setup` "
                    "(requirements/dev.txt pins it; its wheel carries the Kubernetes schemas, no network needed)",
                    pytrace=False)
    return kubernetes_validate


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


@functools.cache
def _parsed() -> tuple[tuple[str, dict], ...]:
    return tuple((path.name, doc) for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc)


def documents() -> Iterator[tuple[str, dict]]:
    """(file name, resource) for every resource of every manifest (parsed once; copy before changing one)."""
    yield from _parsed()


def resources(kind: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for _, doc in documents():
        if doc["kind"] == kind:
            assert doc["metadata"]["name"] not in found, f"two {kind}s named {doc['metadata']['name']}"
            found[doc["metadata"]["name"]] = doc
    return found


def deployment(service: str) -> dict:
    found = resources("Deployment")
    assert kube_name(service) in found, f"no Deployment {kube_name(service)} for service {service}"
    return found[kube_name(service)]


def container(service: str) -> dict:
    containers = deployment(service)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{service}: one container a pod"
    return containers[0]


def env_of(service: str) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(service).get("env", [])}


def container_port(service: str, port: int | str) -> int:
    """A numeric port, or a named one resolved against the container's ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container(service)["ports"] if "name" in p}
    assert port in named, f"{service}: no container port named {port!r}"
    return named[port]


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (500m, 1, 3Gi) as a number."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert match and match[2] in SUFFIX, f"unsupported quantity {text!r}"
    return float(match[1]) * SUFFIX[match[2]]


def compose_default(value: str | float) -> str:
    """The default of a compose `${VAR:-default}` value (or the value itself)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(value))
    return match[1] if match else str(value)


def compose_bytes(text: str) -> float:
    """Docker's mem_limit units (binary: 3g = 3 GiB)."""
    match = re.fullmatch(r"([0-9.]+)([bkmg]?)", text.lower())
    assert match, f"unsupported compose memory {text!r}"
    return float(match[1]) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match[2]]


def compose_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", str(text))
    assert match, f"unsupported compose duration {text!r}"
    return float(match[1])


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def secret_mount(pod: dict, box: dict) -> tuple[dict, dict]:
    """The container's mount of the history database's Secret, and the pod's volume behind it."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    found = [(m, volumes[m["name"]]) for m in box.get("volumeMounts", [])
             if "secret" in volumes.get(m["name"], {}) and volumes[m["name"]]["secret"]["secretName"] == HISTORY_SECRET]
    assert len(found) == 1, f"{box['name']}: the Secret {HISTORY_SECRET} must be mounted once"
    return found[0]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


# --- the schemas -----------------------------------------------------------------------------------------------------

def schema_errors(doc: dict, version: str) -> str | None:
    """Why the strict schema of `version` refuses the resource, or None. An apiVersion/kind without a schema (a
    removed API such as autoscaling/v2beta2) is refused too: the validator's CLI would only warn."""
    kv = validator()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        return f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"
    except kv.SchemaNotFoundError as exc:
        return exc.message
    except kv.utils.VersionNotSupportedError:
        pytest.fail(f"kubernetes-validate {kv.__version__} has no schemas for Kubernetes {version}; "
                    f"it has {', '.join(sorted(set(kv.utils.all_versions())))}", pytrace=False)
    return None


def test_the_folder_has_manifests_and_the_kustomization_lists_each() -> None:
    kustomization_ = kustomization()
    assert kustomization_["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization_["kind"] == "Kustomization"
    listed = kustomization_["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [path.name for path in manifest_files()], "kustomization.yaml must list every manifest"
    assert {doc["kind"] for _, doc in documents()} >= {
        "Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "PersistentVolumeClaim"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_strict_schemas(version: str) -> None:
    assert {"postgres.yaml", f"{kube_name(GATEWAY)}.yaml"} <= {name for name, _ in documents()}
    errors = [f"{name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {error}"
              for name, doc in documents() if (error := schema_errors(doc, version))]
    assert not errors, f"against Kubernetes {version}:\n" + "\n".join(errors)


def _broken(change: str) -> dict:
    """The ocr-nb Deployment (or HPA), broken one way."""
    doc = copy.deepcopy(deployment("ocr_nb"))
    box = doc["spec"]["template"]["spec"]["containers"][0]
    if change == "misspelled field":
        box["readinesProbe"] = box.pop("readinessProbe")
    elif change == "misspelled nested field":
        box["readinessProbe"]["httpGet"]["paht"] = box["readinessProbe"]["httpGet"].pop("path")
    elif change == "number where a string goes":
        box["env"][0]["value"] = 1
    elif change == "string where a number goes":
        box["ports"][0]["containerPort"] = str(box["ports"][0]["containerPort"])
    elif change == "required field missing":
        del box["name"]
    elif change == "removed API":
        doc = copy.deepcopy(resources("HorizontalPodAutoscaler")[kube_name("ocr_nb")])
        doc["apiVersion"] = "autoscaling/v2beta2"
    return doc


@pytest.mark.parametrize("change", ["misspelled field", "misspelled nested field", "number where a string goes",
                                    "string where a number goes", "required field missing", "removed API"])
def test_the_validator_rejects_a_broken_manifest(change: str) -> None:
    """The check above is only worth something if the installed validator refuses these."""
    for version in KUBERNETES_VERSIONS:
        assert schema_errors(_broken(change), version), f"{change} passed against {version}"


def test_names_ports_and_quantities_are_well_formed() -> None:
    """What the schemas leave to the API server: DNS names, port names, quantities."""
    for name, doc in documents():
        label = DNS_1035 if doc["kind"] == "Service" else DNS_LABEL
        assert label.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63, (name, doc["metadata"])
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for box in pod["containers"]:
            assert DNS_LABEL.match(box["name"]), box["name"]
            for port in box["ports"]:
                assert PORT_NAME.match(port["name"]) and len(port["name"]) <= 15, port
            for kind in ("requests", "limits"):
                for amount in box["resources"][kind].values():
                    assert QUANTITY.match(str(amount)), (name, amount)
        for volume in pod.get("volumes", []):
            assert DNS_LABEL.match(volume["name"]), volume


# --- the project: member table, compose, settings --------------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_a_deployment_per_service_with_its_image_port_and_env(service: str) -> None:
    spec = members.service(service)
    box = container(service)
    assert box["image"] == f"classifier/{service}:latest"
    assert [p["containerPort"] for p in box["ports"]] == [spec.port]
    env = env_of(service)
    known = set(Settings.env_names().values())
    assert set(env) <= known, f"{service}: not settings: {set(env) - known}"
    settings = Settings.from_env(env)  # every value parses as its setting's type
    assert settings.models_dir == Path("/models") and env["WEB_CONCURRENCY"]
    if service in MEMBERS:
        assert {"WEIGHTS_DIR", "TORCH_THREADS"} <= set(env)
        assert settings.weights_dir == Path("/models/weights")
    else:
        # The history database's URL (password included) from the mounted Secret, never in the spec itself.
        assert "HISTORY_DB" not in env
        assert Path(settings.history_db_file) == HISTORY_SECRETS_DIR / "url"


@pytest.mark.parametrize("service", SERVICES)
def test_probes_on_the_health_routes_of_its_port(service: str) -> None:
    box, port = container(service), members.service(service).port
    for probe, path in (("startupProbe", READY), ("readinessProbe", READY), ("livenessProbe", LIVE)):
        assert probe in box, f"{service}: no {probe}"
        action = box[probe]["httpGet"]
        assert action["path"] == path, f"{service} {probe}"
        assert container_port(service, action["port"]) == port, f"{service} {probe}"
    startup = box["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    # The model load: compose's start_period (members 300 s, the gateway 120 s) at least.
    assert budget >= (300 if service in MEMBERS else 120), f"{service}: startupProbe gives up after {budget} s"


@pytest.mark.parametrize("service", SERVICES)
def test_runs_as_the_images_user_and_stops_gracefully(service: str, compose: dict) -> None:
    pod = deployment(service)["spec"]["template"]["spec"]
    uid, gid = (int(part) for part in compose["services"][service]["user"].split(":"))
    context = {**pod.get("securityContext", {}), **container(service).get("securityContext", {})}
    assert context["runAsNonRoot"] is True and context["runAsUser"] == uid and context.get("runAsGroup", gid) == gid
    assert container(service)["securityContext"]["allowPrivilegeEscalation"] is False
    # SIGTERM: not ready for DRAIN_SECONDS, then gunicorn's graceful_timeout (drain + 30 s) for requests in flight.
    drain = Settings.from_env(env_of(service)).drain_seconds
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= math.ceil(drain) + 30, f"{service}: {grace} s cannot hold the drain and the longest request"
    assert grace >= compose_seconds(compose["services"][service]["stop_grace_period"])


@pytest.mark.parametrize("service", SERVICES)
def test_resources_mirror_compose_limits(service: str, compose: dict) -> None:
    resources_ = container(service)["resources"]
    entry = compose["services"][service]
    cpus, memory = float(compose_default(entry["cpus"])), compose_bytes(compose_default(entry["mem_limit"]))
    assert quantity(resources_["limits"]["cpu"]) == cpus and quantity(resources_["limits"]["memory"]) == memory
    assert quantity(resources_["requests"]["cpu"]) <= cpus and quantity(resources_["requests"]["memory"]) <= memory
    if service in MEMBERS:
        assert (cpus, memory) == (1.0, 3 * 2**30)


@pytest.mark.parametrize("service", SERVICES)
def test_models_come_read_only_from_the_claim(service: str) -> None:
    pod = deployment(service)["spec"]["template"]["spec"]
    mounts = [m for m in container(service)["volumeMounts"] if m["mountPath"] == "/models"]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True, f"{service}: /models must be mounted read-only"
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[0]["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": MODELS_CLAIM, "readOnly": True}
    claim = resources("PersistentVolumeClaim")[MODELS_CLAIM]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]


@pytest.mark.parametrize("service", SERVICES)
def test_services_headless_for_members_clusterip_for_the_gateway(service: str) -> None:
    found = resources("Service")
    assert kube_name(service) in found, f"no Service {kube_name(service)}"
    svc = found[kube_name(service)]["spec"]
    pod_labels = deployment(service)["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= pod_labels.items(), f"{service}: the Service selects none of its pods"
    assert deployment(service)["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (port,) = svc["ports"]
    assert port["port"] == members.service(service).port
    assert container_port(service, port.get("targetPort", port["port"])) == members.service(service).port
    if service in MEMBERS:
        assert svc.get("clusterIP") == "None", f"{service}: headless, so the gateway sees every pod"
    else:
        assert svc.get("type", "ClusterIP") == "ClusterIP" and svc.get("clusterIP") != "None"


def test_the_gateway_finds_every_member_by_its_headless_service() -> None:
    urls = Settings.from_env(env_of(GATEWAY)).member_url_map()
    expected = {name: f"http://{kube_name(name)}:{members.service(name).port}" for name in MEMBERS}
    assert urls == expected
    headless = {name for name, svc in resources("Service").items() if svc["spec"].get("clusterIP") == "None"}
    assert {kube_name(name) for name in MEMBERS} <= headless


@pytest.mark.parametrize("service", SERVICES)
def test_a_disruption_budget_per_service_that_lets_a_drain_through(service: str) -> None:
    found = resources("PodDisruptionBudget")
    assert kube_name(service) in found, f"no PodDisruptionBudget {kube_name(service)}"
    budget = found[kube_name(service)]["spec"]
    pod_labels = deployment(service)["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = {d["spec"]["scaleTargetRef"]["name"]: d for d in resources("HorizontalPodAutoscaler").values()}
    least = hpa[kube_name(service)]["spec"]["minReplicas"] if kube_name(service) in hpa \
        else deployment(service)["spec"].get("replicas", 1)
    if "minAvailable" in budget:
        assert budget["minAvailable"] < least, f"{service}: minAvailable {budget['minAvailable']} blocks every drain"
    else:
        assert budget["maxUnavailable"] >= 1


def test_ocr_nb_scales_on_cpu() -> None:
    (hpa,) = [d for d in resources("HorizontalPodAutoscaler").values()]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": kube_name("ocr_nb")}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The autoscaler owns the count: a replicas field would be reset by every kubectl apply.
    assert "replicas" not in deployment("ocr_nb")["spec"]
    # Utilization is relative to the request, so there must be one.
    assert "cpu" in container("ocr_nb")["resources"]["requests"]


# --- the history: PostgreSQL, its Secret, the gateway's replicas -----------------------------------------------------

def postgres() -> tuple[dict, dict]:
    """The postgres StatefulSet and its one container."""
    found = resources("StatefulSet")
    assert "postgres" in found, "no StatefulSet postgres (deploy/k8s/postgres.yaml)"
    (box,) = found["postgres"]["spec"]["template"]["spec"]["containers"]
    return found["postgres"], box


def test_postgres_is_a_statefulset_with_its_own_volume_behind_a_headless_service() -> None:
    assert {doc["kind"] for name, doc in documents() if name == "postgres.yaml"} == {"Service", "StatefulSet"}
    sts, box = postgres()
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == "postgres"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30
    data = [m for m in box["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert [m["mountPath"] for m in data] == ["/var/lib/postgresql/data"]
    assert claim["metadata"]["name"] not in {v["name"] for v in pod.get("volumes", [])}, "the claim, not a pod volume"
    env = {item["name"]: item["value"] for item in box["env"]}
    assert env["PGDATA"].startswith("/var/lib/postgresql/data")
    assert env["POSTGRES_USER"] == env["POSTGRES_DB"] == "classifier"
    service = resources("Service")["postgres"]["spec"]
    assert service["clusterIP"] == "None"
    assert service["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(5432, "postgres")]
    assert [p["containerPort"] for p in box["ports"] if p["name"] == "postgres"] == [5432]
    for probe in ("readinessProbe", "livenessProbe"):
        command = box[probe]["exec"]["command"]
        assert command[:7] == ["pg_isready", "-h", "127.0.0.1", "-U", "classifier", "-d", "classifier"], probe
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == context["fsGroup"] == 999
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(box["resources"][kind])


def test_postgres_reads_its_password_from_the_secret() -> None:
    sts, box = postgres()
    pod = sts["spec"]["template"]["spec"]
    mount, volume = secret_mount(pod, box)
    assert mount["readOnly"] is True and Path(mount["mountPath"]) == HISTORY_SECRETS_DIR
    password = {item["name"]: item["value"] for item in box["env"]}["POSTGRES_PASSWORD_FILE"]
    (item,) = volume["secret"]["items"]
    assert Path(password) == HISTORY_SECRETS_DIR / item["path"] and item["key"] == "password"
    # Readable by the postgres user: the pod's fsGroup owns the Secret's files.
    assert volume["secret"]["defaultMode"] & 0o040 and pod["securityContext"]["fsGroup"] == 999


def test_the_gateway_mounts_the_same_secret_and_reads_its_url() -> None:
    pod, box = deployment(GATEWAY)["spec"]["template"]["spec"], container(GATEWAY)
    mount, volume = secret_mount(pod, box)
    assert mount["readOnly"] is True and Path(mount["mountPath"]) == HISTORY_SECRETS_DIR
    (item,) = volume["secret"]["items"]
    assert item == {"key": "url", "path": "url"}, "the gateway needs the URL, not the database's password"
    assert Path(env_of(GATEWAY)["HISTORY_DB_FILE"]) == HISTORY_SECRETS_DIR / item["path"]
    # uid 10001 reads it: readable by all, or by the pod's fsGroup.
    mode = volume["secret"].get("defaultMode", 0o644)
    assert mode & 0o004 or (mode & 0o040 and "fsGroup" in pod.get("securityContext", {}))
    sts, postgres_box = postgres()
    assert secret_mount(sts["spec"]["template"]["spec"], postgres_box)[1]["secret"]["secretName"] == \
        volume["secret"]["secretName"] == HISTORY_SECRET
    # Nothing else of the gateway's pod keeps state: no /data left behind.
    assert "/data" not in {m["mountPath"] for m in box["volumeMounts"]}


def test_the_kustomization_generates_the_secret_from_two_git_ignored_files() -> None:
    (generator,) = kustomization()["secretGenerator"]
    assert generator["name"] == HISTORY_SECRET
    assert generator["options"]["disableNameSuffixHash"] is True, "the manifests name the Secret as it is"
    # key=path, or a bare path whose file name is the key.
    files = dict(entry.split("=", 1) if "=" in entry else (Path(entry).name, entry) for entry in generator["files"])
    assert files == {"url": "history-db/url", "password": "history-db/password"}
    assert "literals" not in generator and "envs" not in generator, "no password in the repository"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/k8s/history-db/" in ignored, "the files holding the password must never be committed"


def test_the_gateway_scales_out_now_that_the_history_is_shared() -> None:
    spec = deployment(GATEWAY)["spec"]
    assert spec["replicas"] >= 2
    budget = resources("PodDisruptionBudget")[kube_name(GATEWAY)]["spec"]
    # A drain leaves one answering.
    assert budget.get("minAvailable", 0) >= 1 or budget["maxUnavailable"] < spec["replicas"]
