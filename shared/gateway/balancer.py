"""Client-side balancing across a member's replicas, with ejection: the gateway's one failure-isolation mechanism.

A member URL's host name is resolved to every address behind it (Swarm `dnsrr`, a Kubernetes headless Service;
an IP literal or a local `serve` gives one). Requests go to the replica with the fewest outstanding requests
(Envoy's least-request). A replica that fails `failures` times in a row is ejected for a cool-off that doubles
while it keeps failing; after the cool-off it is probed half-open: its readiness endpoint first (cheap, in the
background, so no client waits on a hung replica), then one trial request. A member whose replicas are all
ejected is the circuit breaker's "open": the gateway answers without it at once. With one replica, ejecting it
*is* opening the member's breaker.
"""
from __future__ import annotations

import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, Iterable
from urllib.parse import urlsplit

from shared.serving import observability

READY_PATH = "/v2/health/ready"


class ReplicaState(StrEnum):
    CLOSED = "closed"  # takes traffic
    OPEN = "open"  # ejected: no traffic until its cool-off ends and a readiness probe passes
    HALF_OPEN = "half_open"  # its readiness probe passed: one trial request decides


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int = 3  # consecutive failures that eject a replica
    cooloff_s: float = 5.0  # first ejection; doubles on each failed probe, up to max_cooloff_s
    max_cooloff_s: float = 60.0
    probe_timeout_s: float = 1.0
    resolve_every_s: float = 5.0  # DNS refresh; also after a connection error, at most once a second


@dataclass
class Replica:
    """One address of a member, and what the gateway has seen of it."""

    address: str  # "ip:port"
    base_url: str
    outstanding: int = 0
    consecutive_failures: int = 0
    state: ReplicaState = ReplicaState.CLOSED
    ejected_until: float = 0.0
    cooloff_s: float = 0.0
    probing: bool = False
    trial_in_flight: bool = False
    last_error: str = ""

    def available(self) -> bool:
        if self.state == ReplicaState.CLOSED:
            return True
        return self.state == ReplicaState.HALF_OPEN and not self.trial_in_flight


@dataclass
class Pick:
    """A replica chosen for one attempt; hand it back with `ReplicaPool.release`."""

    replica: Replica
    trial: bool = False


@dataclass
class ReplicaPool:
    """The replicas of one member URL, kept fresh from DNS, picked by least outstanding requests."""

    member: str
    url: str
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    resolver: Callable[[str, int], list[str]] | None = None
    prober: Callable[[str, float], bool] | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.path = parts.path.rstrip("/")
        self.resolver = self.resolver or resolve_all
        self.prober = self.prober or probe_ready
        self.replicas: dict[str, Replica] = {}
        self._lock = threading.Lock()
        self._resolved_at = -1e9
        self._resolve_requested = True
        self._resolving = False
        self.resolve_error = ""

    # --- choosing ------------------------------------------------------------------------------------
    def pick(self, exclude: Iterable[str] = ()) -> Pick | None:
        """The available replica with the fewest outstanding requests (ties at random), or None."""
        self._maybe_resolve()
        now = self.clock()
        skip = set(exclude)
        with self._lock:
            for replica in self.replicas.values():
                self._maybe_probe(replica, now)
            choices = [r for r in self.replicas.values() if r.available() and r.address not in skip]
            if not choices:
                return None
            least = min(r.outstanding for r in choices)
            replica = random.choice([r for r in choices if r.outstanding == least])
            replica.outstanding += 1
            trial = replica.state == ReplicaState.HALF_OPEN
            replica.trial_in_flight = replica.trial_in_flight or trial
        return Pick(replica, trial)

    def release(self, pick: Pick, failed: bool, error: str = "", connection_error: bool = False) -> None:
        """Count one attempt's end: a failure may eject the replica, a success closes it again."""
        replica = pick.replica
        with self._lock:
            replica.outstanding = max(0, replica.outstanding - 1)
            if pick.trial:
                replica.trial_in_flight = False
            if not failed:
                if replica.state != ReplicaState.CLOSED:
                    observability.REPLICA_STATE.labels(self.member, replica.address).set(0)
                replica.consecutive_failures, replica.state, replica.cooloff_s = 0, ReplicaState.CLOSED, 0.0
                return
            replica.consecutive_failures += 1
            replica.last_error = error
            if pick.trial or (replica.state == ReplicaState.CLOSED
                              and replica.consecutive_failures >= self.policy.failures):
                self._eject(replica)
        if connection_error:
            self._resolve_requested = True

    def _eject(self, replica: Replica) -> None:
        """Open: no traffic for a cool-off that doubles while the replica keeps failing."""
        previous = replica.cooloff_s
        replica.cooloff_s = min(self.policy.max_cooloff_s, previous * 2 if previous else self.policy.cooloff_s)
        replica.state, replica.ejected_until = ReplicaState.OPEN, self.clock() + replica.cooloff_s
        observability.REPLICA_EJECTIONS.labels(self.member, replica.address).inc()
        observability.REPLICA_STATE.labels(self.member, replica.address).set(2)

    def _maybe_probe(self, replica: Replica, now: float) -> None:
        """After its cool-off, an ejected replica's readiness is checked in the background (never by a client)."""
        if replica.state != ReplicaState.OPEN or replica.probing or now < replica.ejected_until:
            return
        replica.probing = True
        threading.Thread(target=self._probe, args=(replica,), name=f"probe-{self.member}", daemon=True).start()

    def _probe(self, replica: Replica) -> None:
        ok = self.prober(replica.base_url + READY_PATH, self.policy.probe_timeout_s)
        with self._lock:
            replica.probing = False
            if replica.state != ReplicaState.OPEN:
                return
            if ok:
                replica.state = ReplicaState.HALF_OPEN
                observability.REPLICA_STATE.labels(self.member, replica.address).set(1)
            else:
                self._eject(replica)

    # --- what it knows ---------------------------------------------------------------------------------
    def open_reason(self) -> str:
        """Why no replica could be picked: for the degraded answer's `failed` and the logs."""
        with self._lock:
            if not self.replicas:
                return f"no address for {self.host}:{self.port} ({self.resolve_error or 'nothing resolved'})"
            now = self.clock()
            parts = [f"{r.address} ejected after {r.consecutive_failures} failures ({r.last_error or 'failed'}), "
                     f"probed again in {max(0.0, r.ejected_until - now):.1f} s"
                     if r.state == ReplicaState.OPEN else f"{r.address} on trial" for r in self.replicas.values()]
        return "circuit open: " + "; ".join(parts)

    def addresses(self) -> list[tuple[str, str]]:
        """(address, base URL) of every replica known now (resolving first when due)."""
        self._maybe_resolve()
        with self._lock:
            return [(r.address, r.base_url) for r in self.replicas.values()]

    def snapshot(self) -> list[dict]:
        """Every replica's state, for /v2/models/stacking and tests."""
        with self._lock:
            return [{"address": r.address, "state": r.state.value, "outstanding": r.outstanding,
                     "consecutive_failures": r.consecutive_failures} for r in self.replicas.values()]

    @property
    def breaker_open(self) -> bool:
        with self._lock:
            return not any(r.available() for r in self.replicas.values())

    # --- resolving -------------------------------------------------------------------------------------
    def _maybe_resolve(self) -> None:
        now = self.clock()
        due = now - self._resolved_at >= (1.0 if self._resolve_requested else self.policy.resolve_every_s)
        with self._lock:
            if not due or self._resolving:
                return
            self._resolving = True
        try:
            addresses = self.resolver(self.host, self.port)
            self.resolve_error = ""
        except OSError as exc:
            addresses, self.resolve_error = [], f"cannot resolve {self.host}: {exc}"
        with self._lock:
            self._resolving, self._resolve_requested, self._resolved_at = False, False, now
            if addresses or not self.replicas:  # a failed lookup keeps the replicas last seen
                self._update(addresses)

    def _update(self, addresses: list[str]) -> None:
        wanted = {f"{_host_for_url(a)}:{self.port}": a for a in addresses}
        for gone in set(self.replicas) - set(wanted):
            del self.replicas[gone]
        for address in wanted:
            if address not in self.replicas:
                self.replicas[address] = Replica(address, f"{self.scheme}://{address}{self.path}")
                observability.REPLICA_STATE.labels(self.member, address).set(0)


def resolve_all(host: str, port: int) -> list[str]:
    """Every address of a host name, in a stable order (an IP literal is itself)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = {info[4][0] for info in infos if info[0] == socket.AF_INET}
    return sorted(v4 or {info[4][0] for info in infos})  # "localhost": the IPv4 address servers bind by default


def probe_ready(url: str, timeout: float) -> bool:
    """True when the replica's readiness endpoint answers 200 within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _host_for_url(address: str) -> str:
    return f"[{address}]" if ":" in address else address
