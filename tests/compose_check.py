"""`make compose-test`: the docker-compose stack, end to end, through its published ports on 127.0.0.1.

Builds the four images and the history's PostgreSQL, checks that none trusts this host's extra CAs (they are for the
build's pip steps only), brings the stack up, POSTs real photos to all four ports and checks the response shape and
that the gateway's history (in PostgreSQL) lists them, stops clip_svm and checks the gateway answers degraded,
starts it again and waits until the gateway is whole, stops PostgreSQL and checks predictions still answer and
their records arrive once it is back, then tears everything down
(always, even on failure). Without trained models it trains a small one on SYNTHETIC weights in a temporary folder
first, and says so.

    python -m tests.compose_check [--models DIR] [--keep-up] [--skip-build]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx

from shared import members, repository
from shared.config import Settings
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order
ROOT = Path(__file__).resolve().parent.parent
PROJECT = "classifier_compose_test"
SERVICES = (*MEMBERS, GATEWAY)
DATABASE = "postgres"  # the history's service: no HTTP port of ours, its health is docker's
CONTAINERS = (*SERVICES, DATABASE)
STOPPED = "clip_svm"  # the member taken down to see the gateway degrade
DEFAULT_SUBNET = "172.16.238"
HEALTH_TIMEOUT_S = 600.0
RECOVER_TIMEOUT_S = 120.0
LOG_DIR = ROOT / "test-artifacts" / "compose"
MODELS_CACHE = ROOT / ".cache" / "check-models"  # the small synthetic models the compose and swarm checks share
MEMBER_KEYS = {"class_id", "proba", "label", "probas", "model", "model_version"}
GATEWAY_KEYS = MEMBER_KEYS | {"members", "degraded", "failed", "latency_ms", "request_id"}
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")  # a TLS-intercepting proxy's CAs, as the Makefile reads them
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PEM_BODY = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


class CheckFailed(Exception):
    """A step of the round trip did not do what it should."""


# --- output -----------------------------------------------------------------------------------------
@dataclass
class Clock:
    """Wall-clock timings per step, printed as they finish and summed at the end."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float]] = field(default_factory=list)
    log: Callable[[str], None] = field(default=lambda message: say(message))  # swarm_check passes its own

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.log(f"--> {name}")
        begun = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - begun
            self.steps.append((name, took))
            self.log(f"    {name}: {took:.1f} s")

    def summary(self) -> str:
        rows = [f"  {took:7.1f} s  {name}" for name, took in self.steps]
        return "\n".join(["timings:", *rows, f"  {time.monotonic() - self.started:7.1f} s  total"])


def say(message: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def banner(*texts: str) -> None:
    lines = [line for text in texts for line in text.splitlines()]
    rule = "=" * min(100, max(len(line) for line in lines))
    print("\n".join([rule, *lines, rule]), flush=True)


# --- the compose project ----------------------------------------------------------------------------
@dataclass
class Stack:
    """docker-compose for one project, with the environment the compose file interpolates."""

    command: list[str]
    env: dict[str, str]
    ports: dict[str, int]

    def run(self, *args: str, log: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run docker-compose; output goes to `log` (shown on failure) or is captured."""
        argv = [*self.command, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args]
        if log is None:
            done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True)
        else:
            with open(log, "w") as out:
                done = subprocess.run(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, text=True)
        if check and done.returncode != 0:
            text = log.read_text()[-4000:] if log else (done.stdout + done.stderr)[-4000:]
            raise CheckFailed(f"`{' '.join(args)}` exited {done.returncode}:\n{text}")
        return done

    def container_id(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        """Docker's health status of the service's container ('none' when it has no container)."""
        cid = self.container_id(service)
        if not cid:
            return "none"
        done = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}/{{.State.Health.Status}}", cid],
                              capture_output=True, text=True)
        return done.stdout.strip() or "none"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


def compose_command() -> list[str]:
    """docker-compose (v1, Debian's) or else `docker compose` (v2)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    raise CheckFailed("Neither docker-compose nor `docker compose` is installed (Debian: apt-get install docker-compose).")


def stack_env(models: Path, ports: dict[str, int], subnet: str) -> dict[str, str]:
    """The compose file's variables: our models folder, loopback-only ports, a free subnet."""
    env = dict(os.environ)
    env.update(MODELS_PATH=str(models), PUBLISH_ADDR="127.0.0.1", SUBNET_PREFIX=subnet)
    env.update({f"HOST_PORT_{name.upper()}": str(port) for name, port in ports.items()})
    return build_env(env)


def build_env(env: dict[str, str]) -> dict[str, str]:
    """env with the Makefile's build defaults, for runs without make (compose and swarm checks alike)."""
    if "DOCKER_BUILDKIT" not in env and not _has_buildx():
        env["DOCKER_BUILDKIT"] = "0"  # the CLI refuses BuildKit without buildx; the classic builder needs nothing
    env.setdefault("BUILD_CA_CERTS", build_ca_certs())  # pip behind a TLS proxy still gets through
    return env


# --- the host's extra CAs: the build's pip steps trust them, the images must not ----------------------------------
def host_ca_texts() -> list[str]:
    """The host's extra CA files (/usr/local/share/ca-certificates/*.crt), as the Makefile reads them."""
    texts = []
    for path in sorted(HOST_CA_DIR.glob("*.crt")):
        try:
            texts.append(path.read_text(encoding="ascii", errors="replace"))
        except OSError:
            continue  # the Makefile's cat skips an unreadable file too
    return texts


def build_ca_certs() -> str:
    """The BUILD_CA_CERTS build arg the Makefile computes: base64 of the host's CA PEMs, '' when it has none."""
    pems = "".join(text if text.endswith("\n") else text + "\n" for text in host_ca_texts())
    return base64.b64encode(pems.encode("ascii", errors="replace")).decode("ascii")


def pem_bodies(text: str) -> set[str]:
    """The base64 bodies of the PEM certificates in a text, whitespace removed (the DER they encode, as text)."""
    return {re.sub(r"\s+", "", body) for body in PEM_BODY.findall(text)}


def host_cas_in(bundle: str, host_cas: set[str]) -> set[str]:
    """The host CA bodies that a CA bundle's text carries (however its lines are wrapped)."""
    return {body for body in host_cas if body in re.sub(r"\s+", "", bundle)}


def _has_buildx() -> bool:
    return subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0


def free_ports() -> dict[str, int]:
    """The seed's ports 5000-5003 when free on 127.0.0.1, else free ones (said out loud)."""
    ports = {spec.name: spec.port for spec in members.services()}
    busy = [name for name, port in ports.items() if not _port_free(port)]
    for name in busy:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports[name] = sock.getsockname()[1]
        say(f"port {members.service(name).port} is busy on this host: publishing {name} on {ports[name]} instead")
    return ports


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_subnet(requested: str | None) -> str:
    """SUBNET_PREFIX as asked, else the seed's 172.16.238 unless a docker network already holds it."""
    if requested:
        return requested
    taken = _docker_subnets()
    for third in [238, *range(239, 255)]:
        prefix = f"172.16.{third}"
        if f"{prefix}.0/24" not in taken:
            if third != 238:
                say(f"{DEFAULT_SUBNET}.0/24 is used by another docker network: using {prefix}.0/24")
            return prefix
    raise CheckFailed("No free 172.16.238-254.0/24 subnet for the test network; set SUBNET_PREFIX.")


def _docker_subnets() -> set[str]:
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True).stdout.split()
    if not ids:
        return set()
    out = subprocess.run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids],
                         capture_output=True, text=True).stdout
    return set(out.split())


# --- models -------------------------------------------------------------------------------------------
def choose_models(requested: Path | None, workdir: Path, settings: Settings) -> Path:
    """The given folder, else ./models when it holds a trained stack, else a small SYNTHETIC one: made now, or the
    one an earlier check made from this very code (compose-test then swarm-test in CI train it once)."""
    if requested is not None:
        return requested.resolve()
    local = ROOT / "models"
    if repository.has_model(local) and (local / "weights" / "weights.json").is_file():
        say(f"using the trained models in {local}")
        return local
    cached = MODELS_CACHE / code_digest()
    if (cached / "models" / "manifest.json").is_file():
        say(f"using the SYNTHETIC check models an earlier check trained from this code: {cached / 'models'}")
        return cached / "models"
    made = prepare_synthetic_models(workdir / "models", settings)
    shutil.rmtree(MODELS_CACHE, ignore_errors=True)  # older code's models: never read again
    shutil.copytree(made, cached / "models")
    _open_to_all(cached)
    return made


def code_digest() -> str:
    """What a check model depends on: every Python file under shared/ (a code change trains a new one)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "shared").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_synthetic_models(out: Path, settings: Settings) -> Path:
    """Tiny SYNTHETIC weights + a stack trained on 20 camera photos and 20 screenshots, readable by the containers."""
    from shared.learning.data import balanced_subset, folder_records, write_csv
    from shared.learning.training import train
    from shared.weights import write_synthetic_weights

    data = Path(settings.datasets_dir) / "screenshots"
    banner(f"No trained models in {ROOT / 'models'}: training a SMALL model on SYNTHETIC weights into {out}",
           f"(randomly initialised tiny CLIP + EasyOCR; 20 images per class from {data}).",
           "Its predictions test the plumbing only; they say \"synthetic_weights\": true.")
    settings = settings.replace(torch_threads=1, cache_dir=out.parent / "cache", clip_batch_size=16)
    weights = write_synthetic_weights(out / "weights", settings, tiny=True)
    records = balanced_subset(folder_records(data), per_class=20, seed=0)
    train(write_csv(records, out.parent / "train.csv"), out, weights, settings, folds=3, seed=0)
    _open_to_all(out)
    return out


def _open_to_all(folder: Path) -> None:
    """The containers run as uid 10001; temp folders are 0700."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def real_photos(settings: Settings) -> list[Path]:
    """One camera photo and one screenshot from the datasets, plus a grocery photo when that set exists."""
    root = Path(settings.datasets_dir)
    globs = ["screenshots/camera/*.jpg", "screenshots/screenshots/*.jpg", "grocery/val/*/*/*.jpg"]
    photos = [next(iter(sorted(root.glob(pattern))), None) for pattern in globs]
    found = [p for p in photos if p is not None]
    if len(found) < 2:
        raise CheckFailed(f"Need real photos under {root} (DATASETS_DIR): {', '.join(globs)}")
    return found


# --- checks -------------------------------------------------------------------------------------------
def post(client: httpx.Client, url: str, photo: Path) -> dict:
    """POST the raw bytes; the JSON body of a 200, else CheckFailed with what came back."""
    response = client.post(url, content=photo.read_bytes(), headers={"Content-Type": "image/jpeg"})
    if response.status_code != 200:
        raise CheckFailed(f"POST {photo.name} to {url}: {response.status_code} {response.text[:500]}")
    return response.json()


def check_shape(body: dict, service: str, classes: set[str] | None = None) -> None:
    """The seed's {"class_id": [k], "proba": p} plus the documented fields, consistent with each other."""
    required = GATEWAY_KEYS if service == GATEWAY else MEMBER_KEYS
    problems = [f"missing {key!r}" for key in sorted(required - set(body))]
    if not problems:
        problems = _shape_problems(body, service)
    if classes is not None and set(body.get("probas", {})) != classes:
        problems.append(f"classes {sorted(body.get('probas', {}))} differ from the members' {sorted(classes)}")
    if problems:
        raise CheckFailed(f"{service} answered {json.dumps(body)[:600]}: {'; '.join(problems)}")


def _shape_problems(body: dict, service: str) -> list[str]:
    problems = []
    class_id, proba, probas = body["class_id"], body["proba"], body["probas"]
    if not (isinstance(class_id, list) and len(class_id) == 1 and isinstance(class_id[0], int)):
        problems.append(f"class_id should be [k], got {class_id!r}")
    if not (isinstance(proba, float) and 0.0 <= proba <= 1.0):
        problems.append(f"proba should be a float in [0, 1], got {proba!r}")
    if abs(sum(probas.values()) - 1.0) > 1e-3 or max(probas.values()) != proba:
        problems.append(f"probas {probas} should sum to 1 with proba {proba} the largest")
    if body["model"] != service:
        problems.append(f"model should be {service!r}, got {body['model']!r}")
    return problems


def classify_everywhere(stack: Stack, photos: list[Path]) -> None:
    """Every photo to every published port: 200 and the documented shape; the gateway not degraded."""
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        for photo in photos:
            bodies = {name: post(client, stack.url(name), photo) for name in SERVICES}
            classes = set(bodies[MEMBERS[0]]["probas"])
            for name, body in bodies.items():
                check_shape(body, name, classes)
            gateway = bodies[GATEWAY]
            if gateway["degraded"] or gateway["failed"]:
                raise CheckFailed(f"gateway degraded with all members up: {gateway['failed']}")
            if set(gateway["members"]) != set(MEMBERS):
                raise CheckFailed(f"gateway's members {sorted(gateway['members'])} should be {sorted(MEMBERS)}")
            say(f"    {photo.parent.name}/{photo.name}: " + ", ".join(
                f"{name}={body['label']} {body['proba']:.2f}" for name, body in bodies.items())
                + (" (SYNTHETIC weights)" if gateway.get("synthetic_weights") else ""))


def check_degraded(stack: Stack, photo: Path) -> None:
    """With STOPPED down, the gateway still answers, says degraded and names it as failed."""
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        body = post(client, stack.url(GATEWAY), photo)
    check_shape(body, GATEWAY)
    if body["degraded"] is not True or STOPPED not in body["failed"]:
        raise CheckFailed(f"with {STOPPED} stopped the gateway should say degraded with {STOPPED} failed; "
                          f"got degraded={body['degraded']!r} failed={body['failed']!r}")
    reason = str(body["failed"][STOPPED])
    say(f"    degraded: true, {STOPPED} failed ({reason[:70]}{'...' if len(reason) > 70 else ''}); "
        f"label {body['label']} {body['proba']:.2f} in {body['latency_ms']} ms")


def check_containers(stack: Stack) -> None:
    """Every container runs as a non-root user, under a CPU and a memory limit, with a restart policy."""
    for name in CONTAINERS:
        fmt = "{{.Config.User}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}"
        done = subprocess.run(["docker", "inspect", "-f", fmt, stack.container_id(name)], capture_output=True, text=True)
        user, cpus, memory, restart = done.stdout.split()
        if user.split(":")[0] in ("", "0", "root") or int(cpus) <= 0 or int(memory) <= 0 or restart == "no":
            raise CheckFailed(f"{name}: user {user!r}, NanoCpus {cpus}, Memory {memory}, restart {restart!r}")
        say(f"    {name}: user {user}, {int(cpus) / 1e9:g} CPUs, {int(memory) / 2**30:g} GiB, restart {restart}")


def check_images_trust_debian_cas_only(stack: Stack) -> None:
    """No image trusts the build host's extra CAs (BUILD_CA_CERTS is for the build's pip steps only): nothing in
    /usr/local/share/ca-certificates, no host CA in Debian's bundle, no temporary bundle left in /tmp."""
    host_cas = set().union(*map(pem_bodies, host_ca_texts()))
    tag = stack.env.get("IMAGE_TAG") or "latest"
    script = (f"ls -A {HOST_CA_DIR} 2>/dev/null; echo '--- bundle'; cat {IMAGE_CA_BUNDLE} 2>/dev/null; "
              "echo '--- tmp'; ls -d /tmp/build-cas.* 2>/dev/null; true")
    for name in CONTAINERS:
        image = f"classifier/{name}:{tag}"
        done = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "sh", "-c", script],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or "--- bundle" not in done.stdout or "--- tmp" not in done.stdout:
            raise CheckFailed(f"{image}: could not read its CAs (exit {done.returncode}): {done.stderr[-1000:]}")
        extra, rest = done.stdout.split("--- bundle\n", 1)
        bundle, leftovers = rest.split("--- tmp\n", 1)
        problems = []
        if extra.split():
            problems.append(f"{HOST_CA_DIR} holds {extra.split()}")
        if found := host_cas_in(bundle, host_cas):
            problems.append(f"{IMAGE_CA_BUNDLE} carries {len(found)} of this host's {len(host_cas)} extra CAs")
        if leftovers.split():
            problems.append(f"a temporary CA bundle was left behind: {leftovers.split()}")
        if not pem_bodies(bundle):
            problems.append(f"{IMAGE_CA_BUNDLE} is missing or empty (Debian's CAs are expected)")
        if problems:
            raise CheckFailed(f"{image} must trust Debian's CAs only: {'; '.join(problems)}")
        say(f"    {name}: {len(pem_bodies(bundle))} CAs in {IMAGE_CA_BUNDLE}, none of this host's "
            f"{len(host_cas)} extra ones; {HOST_CA_DIR} empty")


def wait_healthy(stack: Stack, services: tuple[str, ...], timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Until docker reports every service healthy and its ready endpoint answers 200 on the published port."""
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        pending = [name for name in pending if not _is_healthy(stack, name)]
        if pending and time.monotonic() > deadline:
            states = {name: stack.health(name) for name in pending}
            raise CheckFailed(f"not healthy after {timeout:.0f} s: {states}")
        if pending:
            time.sleep(2)


def _is_healthy(stack: Stack, service: str) -> bool:
    state = stack.health(service)
    if state.startswith("exited") or state.endswith("unhealthy"):
        raise CheckFailed(f"{service} is {state}")
    if state != "running/healthy":
        return False
    if service == DATABASE:
        return True
    try:
        return httpx.get(f"{stack.url(service)}/v2/health/ready", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_whole(stack: Stack, photo: Path, timeout: float = RECOVER_TIMEOUT_S) -> None:
    """Until the gateway answers with every member again (degraded: false)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        while True:
            body = post(client, stack.url(GATEWAY), photo)
            if not body["degraded"]:
                check_shape(body, GATEWAY)
                return
            if time.monotonic() > deadline:
                raise CheckFailed(f"gateway still degraded {timeout:.0f} s after {STOPPED} was healthy: {body['failed']}")
            time.sleep(1)


# --- the round trip -------------------------------------------------------------------------------------
def round_trip(stack: Stack, photos: list[Path], clock: Clock, skip_build: bool) -> None:
    """Build, CAs, up, classify, degrade, recover."""
    if not skip_build:
        for name in CONTAINERS:  # one at a time: the members' big pip layer is built once, then reused
            with clock.step(f"build {name}"):
                stack.run("build", name, log=LOG_DIR / f"build-{name}.log")
    with clock.step("images trust Debian's CAs only (the host's extra ones were for the build)"):
        check_images_trust_debian_cas_only(stack)
    with clock.step("up (members healthy, then the gateway)"):
        stack.run("up", "-d", "--no-build", log=LOG_DIR / "up.log")
        wait_healthy(stack, CONTAINERS)
        check_containers(stack)
    with clock.step(f"classify {len(photos)} real photos on ports {', '.join(map(str, stack.ports.values()))}"):
        classify_everywhere(stack, photos)
    with clock.step(f"the gateway's history lists them, from {DATABASE}"):
        say(f"    {wait_recorded(stack, len(photos))} records in {DATABASE}")
    with clock.step(f"stop {STOPPED}: gateway degraded"):
        stack.run("stop", STOPPED)
        check_degraded(stack, photos[0])
    with clock.step(f"start {STOPPED}: healthy, gateway whole again"):
        stack.run("start", STOPPED)
        wait_healthy(stack, (STOPPED,))
        wait_whole(stack, photos[0])
    with clock.step(f"stop {DATABASE}: predictions answer; start it: their records arrive"):
        check_database_outage(stack, photos)


def recorded(stack: Stack) -> int:
    """How many records the history's database holds, asked inside its container."""
    done = subprocess.run(["docker", "exec", stack.container_id(DATABASE), "psql", "-U", "classifier", "-d",
                           "classifier", "-tAc", "SELECT count(*) FROM predictions"], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        raise CheckFailed(f"psql in {DATABASE}: {done.stderr.strip()[-500:]}")
    return int(done.stdout.strip())


def wait_recorded(stack: Stack, n: int, timeout: float = 60.0) -> int:
    """Until the database holds at least n records and the gateway's /v1/history lists them; the count."""
    deadline = time.monotonic() + timeout
    while True:
        count = recorded(stack)
        listed = httpx.get(f"{stack.url(GATEWAY)}/v1/history", params={"limit": 500}, timeout=10.0)
        if count >= n and listed.status_code == 200 and len(listed.json()["items"]) >= min(n, 500):
            return count
        if time.monotonic() > deadline:
            raise CheckFailed(f"{DATABASE} holds {count} records, /v1/history answered {listed.status_code}; "
                              f"{n} expected within {timeout:.0f} s")
        time.sleep(1)


def check_database_outage(stack: Stack, photos: list[Path]) -> None:
    """With the database stopped every prediction still answers (not degraded) and the history's reads answer 503
    with Retry-After; once it is back the records written meanwhile arrive."""
    before = recorded(stack)
    stack.run("stop", DATABASE)
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        for photo in photos:
            body = post(client, stack.url(GATEWAY), photo)
            if body["degraded"]:
                raise CheckFailed(f"with {DATABASE} stopped the gateway answered degraded: {body['failed']}")
        listed = client.get(f"{stack.url(GATEWAY)}/v1/history")
    if listed.status_code != 503 or "Retry-After" not in listed.headers:
        raise CheckFailed(f"/v1/history with {DATABASE} stopped: {listed.status_code} {listed.headers}, "
                          "expected 503 with Retry-After")
    say(f"    {len(photos)} predictions answered with {DATABASE} down; /v1/history 503, Retry-After "
        f"{listed.headers['Retry-After']}")
    stack.run("start", DATABASE)
    wait_healthy(stack, (DATABASE,))
    say(f"    back: {wait_recorded(stack, before + len(photos))} records (was {before})")


def show_logs(stack: Stack) -> None:
    """The last lines of every container's log, for the failure report."""
    done = stack.run("logs", "--no-color", "--tail", "40", check=False)
    print(done.stdout[-12000:], done.stderr[-2000:], sep="\n", flush=True)


def tear_down(stack: Stack, clock: Clock) -> None:
    with clock.step("down (containers, network, volumes)"):
        stack.run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.compose_check", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder to mount (default: ./models if trained, else a temporary synthetic one)")
    parser.add_argument("--subnet-prefix", default=None, help=f"first three octets of the /24 (default {DEFAULT_SUBNET})")
    parser.add_argument("--skip-build", action="store_true", help="use the images already built")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running at the end (debugging)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings, clock = Settings.from_env(), Clock()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="compose-test-"))
    stack = None
    try:
        photos = real_photos(settings)
        with clock.step("models"):
            models = choose_models(args.models, workdir, settings)
        stack = Stack(compose_command(), {}, free_ports())
        stack.env = stack_env(models, stack.ports, free_subnet(args.subnet_prefix))
        say(f"project {PROJECT}, models {models}, subnet {stack.env['SUBNET_PREFIX']}.0/24, logs in {LOG_DIR}")
        round_trip(stack, photos, clock, args.skip_build)
        banner("compose-test PASSED", clock.summary())
        return 0
    except (CheckFailed, subprocess.SubprocessError, httpx.HTTPError, OSError) as exc:
        if stack is not None and stack.env:
            show_logs(stack)
        banner("compose-test FAILED", f"{type(exc).__name__}: {exc}", clock.summary())
        return 1
    finally:
        if stack is not None and stack.env and not args.keep_up:
            tear_down(stack, clock)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
