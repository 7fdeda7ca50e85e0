"""`make swarm-test`: deploy/swarm/stack.yml on a single-node Docker Swarm, under load, through three disruptions.

Uses the images docker-compose builds (classifier/<service>:latest; built here the same way when missing) and a
trained models folder (./models, or a small SYNTHETIC one trained now, as tests.compose_check does). Joins this
host's swarm, or creates one on 127.0.0.1 (and leaves it at the end), deploys the stack, waits until every task is
running and healthy and the gateway answers on its host port, sends real photos, then keeps a bounded closed-loop
client running (a few threads, one requests.Session each) for a 10 s baseline (goal: no failed or degraded answer),
then while it
  a) kills one ocr_nb task's container        goal: no failed and no degraded answer until it is replaced
  b) scales ocr_nb 2 -> 3                      goal: the new replica gets traffic (ok answers in the gateway's
                                               classifier_replica_calls_total, and POSTs in the replica's own
                                               classifier_requests_total), no failed answer
  c) rolls clip_svm to a new image tag         goal: no failed answer during the start-first update, which completes
  d) kills the PostgreSQL task (the history)   goal: no failed and no degraded answer while swarm replaces it; then
                                               every answer is a record in the database, less the drops the gateway
                                               counts (history_record_failures_total)
  e) activates a second model version          goal: through serving.json on the bind mount (as `python -m shared
                                               models activate`): every replica loads it, the gateway switches; no
                                               failed, no degraded answer, none mixing versions, and after the
                                               switch every answer is of the new version
  f) rolls back to the first version           goal: the same
and prints the counts and timings of each phase. Always removes the stack (waiting until its network is gone), the
:rolled tag, and the swarm if it made it. Exit status 1 when a goal is missed.

    python -m tests.swarm_check [--models DIR] [--name STACK] [--threads N] [--port P] [--build | --skip-build]
                                [--keep-up]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from shared import members
from shared.config import Settings
from shared.members import GATEWAY, member_names
from tests import compose_check
from tests.compose_check import CheckFailed, Clock, banner, check_shape, choose_models, real_photos

MEMBERS = member_names()
SERVICES = (*MEMBERS, GATEWAY)
DATABASE = "postgres"  # the history's service (not ours: no HTTP port, no member table entry)
TASKS = (*SERVICES, DATABASE)
ROOT = compose_check.ROOT
STACK_FILE = ROOT / "deploy" / "swarm" / "stack.yml"
LOG_DIR = ROOT / "test-artifacts" / "swarm"
DEFAULT_NAME = "classifier_swarm_test"
SCALED, ROLLED = "ocr_nb", "clip_svm"  # the member killed and scaled; the member rolled to a new tag
ROLLED_TAG = "rolled"
GATEWAY_PORT = members.service(GATEWAY).port
# The gateway's attempts per member replica: the balancer's counter (member, replica, outcome), else the name
# first planned for it (member, replica).
REPLICA_METRICS = ("classifier_replica_calls_total", "gateway_replica_requests_total")
KINDS = ("ok", "degraded", "failed")
TIMELINE_STEP_S = 10.0

DEPLOY_TIMEOUT_S = 600.0  # first start: members load their models (the healthchecks' start_period is 300 s)
REPLACE_TIMEOUT_S = 240.0  # a killed task's replacement, a scaled-up task: healthy within this
UPDATE_TIMEOUT_S = 360.0  # the rolling update: start-first, monitor period, done within this
TRAFFIC_TIMEOUT_S = 45.0  # after the new replica is healthy, how long it may take to see traffic
STEADY_S = 10.0  # load with everything healthy before the first disruption (the baseline)
SETTLE_S = 5.0  # load after each disruption has healed, still counted in its phase
MAX_LOAD_S = 1500.0  # the client stops by itself after this, whatever happens
MAX_REQUESTS = 100_000
REMOVE_TIMEOUT_S = 120.0
CRASHES = 3  # failed tasks of one service during a wait: give up at once


def say(message: str) -> None:
    print(f"[swarm-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- docker -------------------------------------------------------------------------------------------------
def docker(*args: str, timeout: float = 60.0, check: bool = True, env: dict | None = None) -> str:
    """Run the docker CLI; its stdout, or CheckFailed with its output (also on a timeout)."""
    try:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"`docker {' '.join(args)}` did not finish within {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        raise CheckFailed(f"`docker {' '.join(args)}` exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def inspect(*ids: str) -> list[dict]:
    """`docker inspect` of tasks or containers (gone ones are left out)."""
    if not ids:
        return []
    out = docker("inspect", *ids, check=False)
    return json.loads(out) if out.strip() else []


def image_name(service: str, tag: str) -> str:
    return f"classifier/{service}:{tag}"


def ensure_images(tag: str, skip_build: bool, clock: Clock, rebuild: bool = False) -> None:
    """The four images docker-compose builds; built here the same way (base image, then one at a time) if missing
    (all four with `rebuild`: after a code change only the code layers are built again)."""
    missing = [name for name in TASKS
               if rebuild or subprocess.run(["docker", "image", "inspect", image_name(name, tag)],
                                            capture_output=True, timeout=30).returncode != 0]
    if not missing:
        say(f"images {', '.join(image_name(name, tag) for name in TASKS)} are there")
        return
    if skip_build:
        raise CheckFailed(f"missing images {missing} (--skip-build): run `make base-image` and `docker-compose build`")
    with clock.step("base image (docker/build-base-image.sh)"):
        _run_logged(["bash", "docker/build-base-image.sh"], LOG_DIR / "base-image.log", timeout=1800)
    env = compose_check.build_env(dict(os.environ, IMAGE_TAG=tag))
    builder = compose_check.Stack(compose_check.compose_command(), env, {})
    for name in TASKS:  # one at a time, as compose_check: the members' big pip layer is built once
        if name in missing:
            with clock.step(f"build {name} (docker-compose build)"):
                builder.run("build", name, log=LOG_DIR / f"build-{name}.log")


def _run_logged(argv: list[str], log: Path, timeout: float) -> None:
    with open(log, "w") as out:
        try:
            done = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s (log: {log})") from exc
    if done.returncode != 0:
        raise CheckFailed(f"`{' '.join(argv)}` exited {done.returncode}:\n{log.read_text()[-3000:]}")


# --- the swarm ---------------------------------------------------------------------------------------------
def write_history_secrets(folder: Path) -> Path:
    """The stack's history secrets (as make swarm-up writes them): a random password and the gateways' URL."""
    import secrets

    folder.mkdir(mode=0o700, parents=True)
    password = secrets.token_hex(16)
    (folder / "password").write_text(password)
    (folder / "url").write_text(f"postgresql://classifier:{password}@{DATABASE}:5432/classifier")
    return folder


def join_swarm() -> bool:
    """This host as an active swarm manager: True when this call created the swarm (so it is left at the end)."""
    state = docker("info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}", timeout=30).split()
    if state and state[0] == "active":
        if state[1:] != ["true"]:
            raise CheckFailed("this host is a swarm worker, not a manager: run the check on a manager node")
        say("this host is already a swarm manager: using its swarm (it stays)")
        return False
    if state and state[0] not in ("inactive", ""):
        raise CheckFailed(f"swarm state {state[0]!r}: fix it (docker swarm leave --force) and rerun")
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=60)
    say("created a single-node swarm on 127.0.0.1 (left again at the end)")
    return True


def network_exists(name: str) -> bool:
    return bool(docker("network", "ls", "-q", "--filter", f"name=^{name}$", check=False, timeout=30).strip())


@dataclass
class Task:
    """A swarm task of a service, with its container's health (single node: the container is local)."""

    id: str
    slot: int
    state: str  # the task's state: new ... starting, running, failed, shutdown
    container: str
    address: str  # on the stack's network, without the prefix length
    image: str
    error: str
    health: str = "none"

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.health == "healthy"


@dataclass
class SwarmStack:
    """One deployed stack: its services are <name>_<service>."""

    name: str
    env: dict[str, str]
    port: int
    deployed: bool = False

    @property
    def network(self) -> str:
        return f"{self.name}_classifier"

    def service(self, service: str) -> str:
        return f"{self.name}_{service}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self) -> None:
        out = docker("stack", "deploy", "--detach=true", "--resolve-image", "never", "--prune",
                     "-c", str(STACK_FILE), self.name, env=self.env, timeout=180)
        self.deployed = True
        (LOG_DIR / "deploy.log").write_text(out)

    def tasks(self, service: str) -> list[Task]:
        """The tasks meant to run (desired state running), with their container's health."""
        ids = docker("service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running",
                     self.service(service), check=False).split()
        tasks = []
        for raw in inspect(*ids):
            status = raw.get("Status", {})
            addresses = [addr for att in raw.get("NetworksAttachments") or []
                         if att.get("Network", {}).get("Spec", {}).get("Name") == self.network
                         for addr in att.get("Addresses") or []]
            tasks.append(Task(id=raw["ID"], slot=raw.get("Slot", 0), state=status.get("State", "?"),
                              container=(status.get("ContainerStatus") or {}).get("ContainerID", ""),
                              address=addresses[0].split("/")[0] if addresses else "",
                              image=raw.get("Spec", {}).get("ContainerSpec", {}).get("Image", "").split("@")[0],
                              error=status.get("Err", "")))
        health = {c["Id"]: ((c.get("State") or {}).get("Health") or {}).get("Status", "none")
                  for c in inspect(*[t.container for t in tasks if t.container])}
        for task in tasks:
            task.health = health.get(task.container, "none")
        return tasks

    def replicas(self, service: str) -> int:
        return int(docker("service", "inspect", "-f", "{{.Spec.Mode.Replicated.Replicas}}", self.service(service)))

    def failures(self, service: str) -> list[str]:
        """Errors of this service's failed or rejected tasks (why a task does not come up)."""
        out = docker("service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}",
                     self.service(service), check=False)
        return [line for line in out.splitlines() if line.split("|", 1)[-1].strip()]

    def update_status(self, service: str) -> dict:
        out = docker("service", "inspect", "-f", "{{json .UpdateStatus}}", self.service(service)).strip()
        return json.loads(out) if out and out != "null" else {}

    def logs(self) -> str:
        parts = []
        for name in TASKS:
            try:
                done = subprocess.run(["docker", "service", "logs", "--no-task-ids", "--tail", "30",
                                       self.service(name)], capture_output=True, text=True, timeout=30)
            except subprocess.TimeoutExpired:
                parts.append(f"--- {name}: no logs within 30 s")
                continue
            parts.append(f"--- {name}\n{(done.stdout + done.stderr)[-3000:]}")
        return "\n".join(parts)

    def remove(self) -> None:
        """docker stack rm; then wait until its containers and network are gone (removal is asynchronous)."""
        docker("stack", "rm", self.name, check=False, timeout=60)
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        label = f"label=com.docker.stack.namespace={self.name}"
        while time.monotonic() < deadline:
            containers = docker("ps", "-aq", "--filter", label, check=False, timeout=30).split()
            if not containers and not network_exists(self.network):
                break
            time.sleep(1)
        else:
            say(f"WARNING: {self.network} or the stack's containers still there after {REMOVE_TIMEOUT_S:.0f} s")
        docker("volume", "rm", f"{self.name}_{DATABASE}", check=False, timeout=30)
        self.deployed = False


def wait_healthy(stack: SwarmStack, services: tuple[str, ...], timeout: float, exclude: set[str] = frozenset()) -> \
        dict[str, list[Task]]:
    """Until each service has as many running+healthy tasks as its replicas (none of `exclude`): those tasks."""
    deadline = time.monotonic() + timeout
    failed_before = {name: len(stack.failures(name)) for name in services}
    while True:
        found, pending = {}, {}
        for name in services:
            want = stack.replicas(name)
            healthy = [t for t in stack.tasks(name) if t.healthy and t.id not in exclude]
            found[name] = healthy
            if len(healthy) < want:
                pending[name] = f"{len(healthy)}/{want} healthy"
        if not pending:
            return found
        crashing = {name: stack.failures(name) for name in pending}
        crashing = {name: errors for name, errors in crashing.items() if len(errors) - failed_before[name] >= CRASHES}
        if crashing:  # swarm would go on replacing them: no point waiting out the timeout
            raise CheckFailed(f"tasks keep failing: {crashing} (`docker service logs` below)")
        if time.monotonic() > deadline:
            errors = {name: stack.failures(name)[-3:] for name in pending}
            raise CheckFailed(f"not healthy after {timeout:.0f} s: {pending}; task errors: {errors}")
        time.sleep(1)


def wait_gateway_ready(stack: SwarmStack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{stack.url}/v2/health/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"the gateway does not answer ready on {stack.url} after {timeout:.0f} s")
        time.sleep(1)


# --- load ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    done: float  # time.monotonic() when the answer came
    kind: str  # ok, degraded, failed
    latency_s: float
    detail: str = ""  # failed: status or exception; degraded: the failed members and their reasons
    version: str = ""  # the model version that answered


class Load:
    """A bounded closed-loop client: `threads` threads POST the photos back to back, each with its own Session."""

    def __init__(self, url: str, photos: list[Path], threads: int):
        self.url = url
        self.bodies = [p.read_bytes() for p in photos]
        self.threads = threads
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        deadline = time.monotonic() + MAX_LOAD_S
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index, deadline), name=f"load-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=70)

    def _run(self, index: int, deadline: float) -> None:
        session = requests.Session()
        n = index
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < MAX_REQUESTS:
            body = self.bodies[n % len(self.bodies)]
            n += 1
            begun = time.monotonic()
            try:
                resp = session.post(self.url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=(5, 60))
                result = self._judge(resp, begun)
            except requests.RequestException as exc:
                result = Result(time.monotonic(), "failed", time.monotonic() - begun, type(exc).__name__)
                time.sleep(0.2)  # do not spin on a refused connection
            with self._lock:
                self.results.append(result)
        session.close()

    @staticmethod
    def _judge(resp: requests.Response, begun: float) -> Result:
        now = time.monotonic()
        if resp.status_code != 200:
            return Result(now, "failed", now - begun, f"HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            return Result(now, "failed", now - begun, "not JSON")
        version = body.get("model_version", "")
        mixed = {m.get("model_version") for m in (body.get("members") or {}).values()} - {version}
        if mixed:  # never: the gateway stacks one version's answers only
            return Result(now, "failed", now - begun, f"mixed versions: {version} with {sorted(mixed)}", version)
        if body.get("degraded"):
            failed = body.get("failed") or {}
            detail = "; ".join(f"{name}: {str(reason)[:100]}" for name, reason in sorted(failed.items()))
            return Result(now, "degraded", now - begun, detail, version)
        return Result(now, "ok", now - begun, "", version)

    def window(self, begun: float, ended: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if begun <= r.done < ended]


@dataclass
class Phase:
    """One phase's window of the load, its goals and what it measured."""

    name: str
    begun: float
    watched: str = ""  # the member whose replicas' gateway counters are shown for this window
    calls_before: Counter = field(default_factory=Counter)
    ended: float = 0.0
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for r in self.results if r.kind == kind)

    def line(self) -> str:
        took = self.ended - self.begun
        lat = sorted(r.latency_s for r in self.results if r.kind != "failed")
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000 if lat else float("nan")
        return (f"{self.name:<28} {took:6.1f} s  {len(self.results):5d} req  ok {self.count('ok'):5d}  "
                f"failed {self.count('failed'):3d}  degraded {self.count('degraded'):3d}  "
                f"{len(self.results) / took if took else 0:5.1f} req/s  p50 {p50:6.0f} ms  p95 {p95:6.0f} ms")

    def details(self) -> list[str]:
        """The commonest reasons of failed and degraded answers, with how long those answers took."""
        by_reason: dict[str, list[float]] = {}
        for r in self.results:
            if r.kind != "ok":
                by_reason.setdefault(f"{r.kind}: {r.detail}", []).append(r.latency_s)
        top = sorted(by_reason.items(), key=lambda item: -len(item[1]))[:5]
        return [f"{len(lat):4d} x {reason} (answered in {statistics.median(lat):.1f} s median)" for reason, lat in top]

    def timeline(self) -> str:
        """ok/degraded/failed answers per TIMELINE_STEP_S, from the phase's start."""
        rows = [[0, 0, 0] for _ in range(int((self.ended - self.begun) // TIMELINE_STEP_S) + 1)]
        for r in self.results:
            rows[int((r.done - self.begun) // TIMELINE_STEP_S)][KINDS.index(r.kind)] += 1
        return (f"timeline, ok/degraded/failed per {TIMELINE_STEP_S:g} s: "
                + " ".join("/".join(map(str, row)) for row in rows))


def open_phase(name: str, stack: SwarmStack, watched: str = "") -> Phase:
    return Phase(name, time.monotonic(), watched, replica_calls(stack, watched) if watched else Counter())


def close_phase(phase: Phase, load: Load, goals: dict[str, int], stack: SwarmStack) -> Phase:
    """End the window, count, compare with the goals ({kind: most allowed}) and print it."""
    phase.ended = time.monotonic()
    phase.results = load.window(phase.begun, phase.ended)
    phase.notes.append(phase.timeline())
    if phase.watched:
        phase.notes.append(f"gateway's attempts on {phase.watched} replicas in this window: "
                           + describe_calls(replica_calls(stack, phase.watched) - phase.calls_before))
    for kind, most in goals.items():
        if phase.count(kind) > most:
            phase.missed.append(f"{phase.name}: {phase.count(kind)} {kind} answers (goal: at most {most})")
    if not phase.results:
        phase.missed.append(f"{phase.name}: no answer at all in {phase.ended - phase.begun:.1f} s")
    say("    " + phase.line())
    for text in [*phase.details(), *phase.notes]:
        say("    " + text.strip())
    return phase


# --- metrics -------------------------------------------------------------------------------------------------
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)", re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """The labelled samples of one metric in a Prometheus text page."""
    return [(dict(LABEL.findall(labels)), float(value)) for name, labels, value in SAMPLE.findall(text)
            if name == metric]


def replica_calls(stack: SwarmStack, member: str) -> Counter:
    """{(replica, outcome): attempts} of one member, from the gateway's /metrics (empty without such a counter)."""
    try:
        text = requests.get(f"{stack.url}/metrics", timeout=10).text
    except requests.RequestException:
        return Counter()
    for metric in REPLICA_METRICS:
        counts: Counter = Counter()
        for labels, value in samples(text, metric):
            if labels.get("member") == member:
                counts[(labels.get("replica", "?"), labels.get("outcome", "ok"))] += value
        if counts:
            return counts
    return Counter()


def describe_calls(calls: Counter) -> str:
    """'10.0.1.4:5000 ok 40 timeout 2; ...' (or why there is nothing to show)."""
    if not calls:
        return f"none counted (no {' or '.join(REPLICA_METRICS)} on the gateway's /metrics?)"
    by_replica: dict[str, list[str]] = {}
    for (replica, outcome), n in sorted(calls.items()):
        by_replica.setdefault(replica, []).append(f"{outcome} {int(n)}")
    return "; ".join(f"{replica} {' '.join(parts)}" for replica, parts in by_replica.items())


def member_post_count(task: Task, member: str) -> float:
    """The replica's own count of answered POSTs (classifier_requests_total), read inside its container."""
    port = members.service(member).port
    code = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5)"
            f".read().decode())")
    text = docker("exec", task.container, "python", "-c", code, timeout=30)
    return sum(value for labels, value in samples(text, "classifier_requests_total")
               if labels.get("method") == "POST" and labels.get("status") == "200")


# --- the phases ----------------------------------------------------------------------------------------------
def classify(stack: SwarmStack, photos: list[Path]) -> None:
    """Each photo through the gateway's host port: 200, the documented shape, every member, not degraded."""
    with requests.Session() as session:
        for photo in photos:
            resp = session.post(stack.url, data=photo.read_bytes(), headers={"Content-Type": "image/jpeg"},
                                timeout=(5, 60))
            if resp.status_code != 200:
                raise CheckFailed(f"POST {photo.name} to {stack.url}: {resp.status_code} {resp.text[:500]}")
            body = resp.json()
            check_shape(body, GATEWAY)
            if body["degraded"] or set(body["members"]) != set(MEMBERS):
                raise CheckFailed(f"gateway degraded with every task healthy: {body['failed']}")
            say(f"    {photo.parent.name}/{photo.name}: {body['label']} {body['proba']:.2f} in "
                f"{body['latency_ms']} ms" + (" (SYNTHETIC weights)" if body.get("synthetic_weights") else ""))


def steady(stack: SwarmStack, load: Load) -> Phase:
    phase = open_phase("steady (all healthy)", stack, SCALED)
    time.sleep(STEADY_S)
    return close_phase(phase, load, {"failed": 0, "degraded": 0}, stack)


def kill_task(stack: SwarmStack, service: str) -> tuple[Task, list[Task], float]:
    """docker kill one healthy task's container of `service`; wait until swarm's replacement is healthy: (the killed
    task, the healthy tasks after, seconds from kill to healthy)."""
    victim = next(t for t in stack.tasks(service) if t.healthy)
    docker("kill", victim.container, timeout=30)
    killed = time.monotonic()
    healed = wait_healthy(stack, (service,), REPLACE_TIMEOUT_S, exclude={victim.id})[service]
    return victim, healed, time.monotonic() - killed


def kill_one(stack: SwarmStack, load: Load) -> Phase:
    """a) docker kill one ocr_nb task's container; the load goes on until swarm's replacement is healthy."""
    phase = open_phase(f"a) kill 1 {SCALED}", stack, SCALED)
    victim, healed, seconds = kill_task(stack, SCALED)
    new = [t for t in healed if t.slot == victim.slot]
    phase.notes.append(f"killed task {victim.id[:12]} ({victim.address}); replacement "
                       f"{(new[0].id[:12] + ' (' + new[0].address + ')') if new else '?'} healthy "
                       f"{seconds:.1f} s after the kill")
    time.sleep(SETTLE_S)
    phase = close_phase(phase, load, {"failed": 0, "degraded": 0}, stack)
    own = sum(1 for r in phase.results if r.kind != "ok" and victim.address in r.detail)
    if own:
        say(f"    {own} of them name the killed replica {victim.address}: requests that were on it, or sent to it "
            "before the gateway stopped picking it")
    return phase


def scale_up(stack: SwarmStack, load: Load) -> Phase:
    """b) ocr_nb 2 -> 3: the new task healthy, then traffic on it (gateway counter + its own count)."""
    before = {t.id for t in stack.tasks(SCALED)}
    want = stack.replicas(SCALED) + 1
    phase = open_phase(f"b) scale {SCALED} to {want}", stack, SCALED)
    docker("service", "scale", "--detach", f"{stack.service(SCALED)}={want}", timeout=60)
    healthy = wait_healthy(stack, (SCALED,), REPLACE_TIMEOUT_S)[SCALED]
    new = [t for t in healthy if t.id not in before]
    if not new:
        raise CheckFailed(f"{SCALED} reached {want} healthy tasks, but none is new: {[t.id for t in healthy]}")
    task = new[0]
    replica = f"{task.address}:{members.service(SCALED).port}"
    phase.notes.append(f"new task {task.id[:12]} at {replica} healthy {time.monotonic() - phase.begun:.1f} s "
                       "after the scale")
    seen_at, ok, own = None, 0.0, 0.0
    deadline = time.monotonic() + TRAFFIC_TIMEOUT_S
    while time.monotonic() < deadline:
        ok, own = replica_calls(stack, SCALED)[(replica, "ok")], member_post_count(task, SCALED)
        if ok > 0 and own > 0:
            seen_at = time.monotonic()
            break
        time.sleep(2)
    time.sleep(SETTLE_S)
    ok, own = replica_calls(stack, SCALED)[(replica, "ok")], member_post_count(task, SCALED)
    phase.notes.append(f"new replica {replica}: {int(ok)} ok attempts in the gateway's counter, {int(own)} POSTs "
                       "answered 200 by its own count"
                       + (f"; traffic seen {seen_at - phase.begun:.1f} s after the scale" if seen_at else ""))
    phase = close_phase(phase, load, {"failed": 0}, stack)
    if ok <= 0:
        phase.missed.append(f"{phase.name}: the gateway's per-replica counter shows no answered request from the "
                            f"new replica {replica}")
    if own <= 0:
        phase.missed.append(f"{phase.name}: the new replica {replica} answered no POST itself")
    return phase


def roll(stack: SwarmStack, load: Load, tag: str) -> Phase:
    """c) clip_svm to classifier/clip_svm:rolled (same bytes, new tag): start-first, no failed answer, completed."""
    target = image_name(ROLLED, ROLLED_TAG)
    docker("tag", image_name(ROLLED, tag), target, timeout=30)
    phase = open_phase(f"c) roll {ROLLED} to :{ROLLED_TAG}", stack, ROLLED)
    docker("service", "update", "--detach", "--no-resolve-image", "--image", target, stack.service(ROLLED),
           timeout=60)
    deadline, state = time.monotonic() + UPDATE_TIMEOUT_S, {}
    while time.monotonic() < deadline:
        state = stack.update_status(ROLLED)
        if state.get("State") == "completed":
            break
        if state.get("State") in ("paused", "rollback_started", "rollback_paused", "rollback_completed"):
            raise CheckFailed(f"the update of {ROLLED} did not go through: {state}")
        time.sleep(1)
    else:
        raise CheckFailed(f"the update of {ROLLED} not completed after {UPDATE_TIMEOUT_S:.0f} s: {state}")
    phase.notes.append(f"UpdateStatus {state.get('State')} {time.monotonic() - phase.begun:.1f} s after "
                       f"`docker service update` ({state.get('Message', '')})")
    running = wait_healthy(stack, (ROLLED,), REPLACE_TIMEOUT_S)[ROLLED]
    images = sorted({t.image for t in running})
    phase.notes.append(f"{ROLLED} tasks run {', '.join(images)}")
    time.sleep(SETTLE_S)
    phase = close_phase(phase, load, {"failed": 0}, stack)
    if images != [target]:
        phase.missed.append(f"{phase.name}: tasks run {images}, not {target}")
    return phase


def kill_database(stack: SwarmStack, load: Load) -> Phase:
    """d) docker kill the PostgreSQL task's container; the load goes on until swarm's replacement is healthy."""
    phase = open_phase(f"d) kill the {DATABASE} task", stack, SCALED)
    victim, healed, seconds = kill_task(stack, DATABASE)
    phase.notes.append(f"killed task {victim.id[:12]}; replacement {healed[0].id[:12]} healthy {seconds:.1f} s "
                       "after the kill")
    time.sleep(SETTLE_S)
    return close_phase(phase, load, {"failed": 0, "degraded": 0}, stack)


def history_counts(stack: SwarmStack) -> tuple[int, float, float, float]:
    """(records in the database, predictions the gateway answered, records it dropped and counted, write attempts
    the database refused and the writer retried)."""
    task = next(t for t in stack.tasks(DATABASE) if t.healthy)
    records = int(docker("exec", task.container, "psql", "-U", "classifier", "-d", "classifier", "-tAc",
                         "SELECT count(*) FROM predictions", timeout=30).strip())
    text = requests.get(f"{stack.url}/metrics", timeout=10).text
    answered = sum(value for labels, value in samples(text, "classifier_requests_total")
                   if labels.get("method") == "POST" and labels.get("status") == "200")
    dropped = sum(value for _, value in samples(text, "history_record_failures_total"))
    refused = sum(value for _, value in samples(text, "history_write_errors_total"))
    return records, answered, dropped, refused


def check_history_complete(stack: SwarmStack, timeout: float = 90.0) -> str:
    """Every answered prediction is a record, or a drop the gateway counted; the writer may still be catching up."""
    deadline = time.monotonic() + timeout
    while True:
        records, answered, dropped, refused = history_counts(stack)
        if records == answered - dropped and answered > 0:
            return (f"{records} records = {int(answered)} answers - {int(dropped)} dropped (counted); "
                    f"{int(refused)} write attempts refused while it was down, retried")
        if time.monotonic() > deadline:
            raise CheckFailed(f"the history holds {records} records for {int(answered)} answers and "
                              f"{int(dropped)} counted drops, {timeout:.0f} s after the load stopped")
        time.sleep(2)


def version_repository(models: Path, workdir: Path) -> tuple[Path, str, str]:
    """A model repository for the stack: the check's model as the active version and a second version (the same
    learners, its manifest noted apart, so another version id), weights beside them; readable by the tasks."""
    from shared import repository
    from shared.artifacts import load_manifest, write_manifest

    root, source = workdir / "repository", repository.active_dir(models)

    def model_files(folder: str, names: list[str]) -> set[str]:  # the model only: not its weights or caches
        return {"weights", "cache", "versions", repository.POINTER} & set(names) if Path(folder) == source else set()

    first = repository.publish(root, lambda folder: shutil.copytree(source, folder, ignore=model_files))

    def second(folder: Path) -> None:
        shutil.copytree(source, folder, ignore=model_files)
        manifest = load_manifest(folder)
        write_manifest(folder, {k: v for k, v in manifest.items() if k != "model_version"} | {"note": "swarm-test v2"})

    other = repository.publish(root, second)
    shutil.copytree(models / "weights", root / "weights")
    compose_check._open_to_all(root)
    return root, first.version, other.version


def switch_version(stack: SwarmStack, load: Load, root: Path, version: str, name: str) -> Phase:
    """e), f) make `version` active through serving.json on the bind mount, as `python -m shared models activate`
    does, watching the gateway's index: every replica loads it, then the gateway switches; no failed, no degraded,
    no answer mixing versions."""
    from shared import rollout

    phase = open_phase(name, stack, SCALED)
    index = rollout.GatewayIndex(stack.url)
    rollout.activate(root, version, index.readiness, index.active, REPLACE_TIMEOUT_S, 3, say=lambda m: None)
    switched = time.monotonic()
    replicas = [e for e in index.entries() or [] if e.get("version") == version and "replica" in e]
    phase.notes.append(f"the gateway answers with {version} {switched - phase.begun:.1f} s after the command; "
                       f"{len(replicas)} member replicas hold it ({', '.join(e['name'] + '@' + e['replica'] for e in replicas)})")
    time.sleep(SETTLE_S)
    phase = close_phase(phase, load, {"failed": 0, "degraded": 0}, stack)
    after = Counter(r.version for r in phase.results if r.done > switched + 1.0)
    phase.notes.append(f"answers by version after the switch: {dict(after)}")
    if set(after) - {version}:
        phase.missed.append(f"{phase.name}: answers of {sorted(set(after) - {version})} after the switch")
    return phase


# --- the whole check -----------------------------------------------------------------------------------------
def pick_port(requested: int | None) -> int:
    port = requested or int(os.environ.get("STACKING_PORT", GATEWAY_PORT))
    if compose_check._port_free(port):
        return port
    if requested:
        raise CheckFailed(f"port {port} is busy on this host")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    say(f"port {port} is busy on this host: publishing the gateway on {free} instead")
    return free


def run_check(stack: SwarmStack, photos: list[Path], clock: Clock, threads: int, tag: str,
              versions: tuple[Path, str, str]) -> list[Phase]:
    with clock.step("deploy (every task running and healthy, gateway ready on its host port)"):
        stack.deploy()
        tasks = wait_healthy(stack, TASKS, DEPLOY_TIMEOUT_S)
        wait_gateway_ready(stack, 120)
        for name, running in tasks.items():
            say(f"    {name}: {', '.join(f'{t.address} ({t.id[:12]})' for t in running)}")
    with clock.step(f"classify {len(photos)} real photos through 127.0.0.1:{stack.port}"):
        classify(stack, photos)
    load = Load(stack.url, photos, threads)
    say(f"closed-loop client: {threads} threads, {len(photos)} photos round robin, at most {MAX_LOAD_S:.0f} s")
    load.start()
    phases: list[Phase] = []
    try:
        with clock.step("steady load"):
            phases.append(steady(stack, load))
        with clock.step(f"a) kill one {SCALED} task"):
            phases.append(kill_one(stack, load))
        with clock.step(f"b) scale {SCALED} up by one"):
            phases.append(scale_up(stack, load))
        with clock.step(f"c) rolling update of {ROLLED}"):
            phases.append(roll(stack, load, tag))
        with clock.step(f"d) kill the {DATABASE} task"):
            phases.append(kill_database(stack, load))
        root, first, second = versions
        with clock.step("e) activate another model version across the replicas"):
            phases.append(switch_version(stack, load, root, second, f"e) activate {second}"))
        with clock.step("f) roll back to the first version"):
            phases.append(switch_version(stack, load, root, first, f"f) roll back to {first}"))
    finally:
        load.stop()
    with clock.step("the history holds every answer"):
        say(f"    {check_history_complete(stack)}")
    return phases


def leave_swarm(created: bool, gwbridge_before: bool) -> None:
    if not created:
        return
    docker("swarm", "leave", "--force", check=False, timeout=120)
    if not gwbridge_before:  # swarm init made it; leaving does not remove it
        docker("network", "rm", "docker_gwbridge", check=False, timeout=30)
    say("left the swarm this check created")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.swarm_check", description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder to mount (default: ./models if trained, else a temporary synthetic one)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"stack name (default {DEFAULT_NAME})")
    parser.add_argument("--threads", type=int, default=2,
                        help="closed-loop client threads (default 2: below what one 2-core node saturates at)")
    parser.add_argument("--port", type=int, default=None, help="gateway host port (default STACKING_PORT or 5003)")
    parser.add_argument("--build", action="store_true", help="build the images even if they are there")
    parser.add_argument("--skip-build", action="store_true", help="fail instead of building missing images")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack (and swarm) up at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings, clock = Settings.from_env(), Clock(log=say)
    tag = os.environ.get("IMAGE_TAG", "latest")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="swarm-test-"))
    stack, created, gwbridge_before, phases = None, False, network_exists("docker_gwbridge"), []
    try:
        photos = real_photos(settings)
        ensure_images(tag, args.skip_build, clock, rebuild=args.build)
        with clock.step("models"):
            models = choose_models(args.models, workdir, settings)
        with clock.step("swarm"):
            created = join_swarm()
        stack = SwarmStack(args.name, {}, pick_port(args.port))
        versions = version_repository(models, workdir)
        stack.env = dict(os.environ, MODELS_PATH=str(versions[0]), STACKING_PORT=str(stack.port), IMAGE_TAG=tag,
                         HISTORY_DB_SECRETS=str(write_history_secrets(workdir / "secrets")))
        if network_exists(stack.network) or docker("stack", "ls", "--format", "{{.Name}}").split().count(stack.name):
            with clock.step(f"remove the stack {stack.name} left from an earlier run"):
                stack.remove()
        say(f"stack {stack.name}, models {models}, gateway on {stack.url}, logs in {LOG_DIR}")
        phases = run_check(stack, photos, clock, args.threads, tag, versions)
        missed = [text for phase in phases for text in phase.missed]
        table = [f"{'phase':<28} {'time':>8}  requests and answers", *(p.line() for p in phases)]
        if missed:
            banner("swarm-test FAILED: goals missed", *missed, *table, clock.summary())
            return 1
        banner("swarm-test PASSED", *table, clock.summary())
        return 0
    except (CheckFailed, subprocess.SubprocessError, requests.RequestException, OSError, StopIteration) as exc:
        if stack is not None and stack.deployed:
            print(stack.logs()[-12000:], flush=True)
        table = [p.line() for p in phases]
        banner("swarm-test FAILED", f"{type(exc).__name__}: {exc}", *table, clock.summary())
        return 1
    finally:
        if not args.keep_up:
            with clock.step("clean up (stack rm, its network gone, :rolled tag, swarm)"):
                if stack is not None:
                    stack.remove()
                docker("rmi", image_name(ROLLED, ROLLED_TAG), check=False, timeout=60)
                leave_swarm(created, gwbridge_before)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
