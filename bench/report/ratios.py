"""Figures derived from the gateway and members runs: latency and throughput against their ideals."""
from __future__ import annotations

from bench.report.format import level
from shared.members import member_names

MEMBERS = member_names()  # the member table's names, in table order


def fan_out_ratio(r: dict) -> float | None:
    paired = r.get("gateway", {}).get("paired_c1")
    return paired["gateway"]["p50_ms"] / paired["fan_out"]["p50_ms"] if paired else None


def slowest_member_c1(r: dict) -> tuple[str, float] | None:
    members = r.get("members", {})
    p50s = {name: level(m["levels"], 1)["p50_ms"] for name, m in members.items() if level(m["levels"], 1)}
    return max(p50s.items(), key=lambda kv: kv[1]) if p50s else None


def cpu_cost(r: dict, concurrency: int) -> dict[str, float]:
    """CPU-seconds per request of each member alone at a concurrency level."""
    return {name: level(m["levels"], concurrency)["cpu_s_per_request"][name]
            for name, m in r.get("members", {}).items() if level(m["levels"], concurrency)}


def cpu_cost_fan_out(r: dict, concurrency: int) -> dict[str, float]:
    """CPU-seconds per request of each member while the client's own fan-out loaded all three together."""
    row = level(r.get("gateway", {}).get("fan_out_levels", []), concurrency)
    return {name: row["cpu_s_per_request"][name] for name in MEMBERS} if row else {}


def ideal_throughput(r: dict, costs: dict[str, float]) -> float | None:
    """What the CPU allows: cores / sum of the members' CPU-seconds per request."""
    if len(costs) < len(MEMBERS) or "machine" not in r:
        return None
    return r["machine"]["nproc"] / sum(costs.values())


def throughput_ratios(r: dict, alone: bool = False) -> dict[int, tuple[float, float, float]]:
    """{concurrency: (gateway complete answers/s, CPU-bound ideal, ratio)}.

    The members' cost per request is measured serving the client's own fan-out at the same concurrency, sharing
    the cores as they do behind the gateway; with alone=True, measured with each member alone on the machine.
    """
    ratios = {}
    for row in r.get("gateway", {}).get("levels", []):
        c = row["concurrency"]
        ideal = ideal_throughput(r, cpu_cost(r, c) if alone else cpu_cost_fan_out(r, c))
        if ideal:
            got = row.get("complete_throughput_rps", row["throughput_rps"])
            ratios[c] = (got, ideal, got / ideal)
    return ratios


def fan_out_throughput_ratio(r: dict, concurrency: int) -> float | None:
    """Gateway complete answers/s ÷ the client's own fan-out answers/s under the same closed loop."""
    g = r.get("gateway", {})
    gw, fo = level(g.get("levels", []), concurrency), level(g.get("fan_out_levels", []), concurrency)
    return gw["complete_throughput_rps"] / fo["throughput_rps"] if gw and fo and fo["throughput_rps"] else None


def paired_difference_ms(r: dict) -> float | None:
    """Median over the paired rounds of (gateway − fan-out) latency on the same image, ms."""
    paired = r.get("gateway", {}).get("paired_c1_ms")
    if not paired:
        return None
    diffs = sorted(g - f for g, f in zip(paired["gateway"], paired["fan_out"]))
    return diffs[len(diffs) // 2] if len(diffs) % 2 else (diffs[len(diffs) // 2 - 1] + diffs[len(diffs) // 2]) / 2


def busy_share(r: dict, concurrency: int, key: str = "levels") -> float:
    """Share of the cores the running services kept busy during the gateway (or fan-out) run at this concurrency."""
    row = level(r["gateway"][key], concurrency)
    cpu_per_request = sum(row["cpu_s_per_request"].values())
    return row["throughput_rps"] * cpu_per_request / r["machine"]["nproc"]


def best_throughput_ratio(r: dict, alone: bool = False) -> tuple[int, float] | None:
    """(concurrency, ratio) at the level where the gateway answered most complete requests per second."""
    ratios = throughput_ratios(r, alone)
    if not ratios:
        return None
    c = max(ratios, key=lambda k: ratios[k][0])
    return c, ratios[c][2]
