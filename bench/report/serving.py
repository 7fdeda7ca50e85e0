"""The serving sections: each member alone, the gateway with its members, batching slack, idle threads."""
from __future__ import annotations

from typing import Any

from bench.report.format import level, num
from bench.report.markdown import render
from bench.report.ratios import busy_share, cpu_cost_fan_out, throughput_ratios
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order


def _level_rows(levels: list[dict], services: list[str]) -> list[list[Any]]:
    rows = []
    for row in levels:
        cpu = row.get("cpu_s_per_request", {})
        batch = row.get("mean_batch_size", {})
        rows.append([row["concurrency"], row["n"], row["errors"], num(row["p50_ms"]), num(row["p95_ms"]),
                     num(row["p99_ms"]), num(row["throughput_rps"], 2),
                     " / ".join(num(cpu.get(s), 3) for s in services),
                     " / ".join(num(batch.get(s), 1) for s in services if s in batch) or "–"])
    return rows


def members_section(r: dict) -> str:
    """Each member alone: one load table per member."""
    if "members" not in r:
        return ""
    tables = {name: _level_rows(m["levels"], [name]) for name, m in r["members"].items()}
    return render("benchmarks/members.md.j2", tables=tables)


def gateway_section(r: dict) -> str:
    """The gateway with its members: paired c=1 latency, load tables, throughput ideals."""
    g = r.get("gateway")
    if not g:
        return ""
    services = [*MEMBERS, GATEWAY]
    paired = [[name, num(row["p50_ms"]), num(row["p95_ms"]), num(row["p99_ms"])]
              for name, row in g["paired_c1"].items()]
    fan_out = _degraded_rows(g["fan_out_levels"], list(MEMBERS)) if g.get("fan_out_levels") else []
    together, alone = throughput_ratios(r), throughput_ratios(r, alone=True)
    ideal = [[c, " + ".join(num(v, 3) for v in cpu_cost_fan_out(r, c).values()), num(ideal, 2), num(got, 2),
              num(ratio, 3), num(alone[c][1] if c in alone else None, 2), num(alone[c][2] if c in alone else None, 3),
              num(level(g["fan_out_levels"], c)["throughput_rps"], 2),
              f"{num(busy_share(r, c) * 100, 0)} % / {num(busy_share(r, c, 'fan_out_levels') * 100, 0)} %"]
             for c, (got, ideal, ratio) in together.items()]
    return render("benchmarks/gateway.md.j2", rounds=g["paired_c1"]["gateway"]["n"], paired=paired,
                  services=services, batching=[m for m in MEMBERS if m != "ocr_nb"],
                  gateway=_degraded_rows(g["levels"], services), fan_out=fan_out, ideal=ideal,
                  nproc=r["machine"]["nproc"] if together else None)


def _degraded_rows(levels: list[dict], services: list[str]) -> list[list[Any]]:
    """A load table's rows with the degraded answers after req/s."""
    return [row[:7] + [lv.get("degraded", 0)] + row[7:] for row, lv in zip(_level_rows(levels, services), levels)]


def slack_section(r: dict) -> str:
    """The gateway with and without batching slack, level by level."""
    shipped, without = r.get("gateway"), r.get("gateway_noslack")
    if not shipped or not without:
        return ""
    rows = []
    for c in sorted({row["concurrency"] for row in without["levels"]}):
        for label, g in (("slack (as shipped)", shipped), ("GATEWAY_SLACK_SHARE=0", without)):
            row = level(g["levels"], c)
            if row:
                rows.append([c, label, num(row["complete_throughput_rps"], 2), num(row["p50_ms"]), num(row["p95_ms"]),
                             " / ".join(num(v, 3) for v in row["cpu_s_per_request"].values()),
                             " / ".join(num(v, 1) for v in row["mean_batch_size"].values() if v is not None) or "–"])
    return render("benchmarks/slack.md.j2", rows=rows)


def spin_section(r: dict) -> str:
    """The gateway with idle OpenMP threads sleeping against spinning."""
    shipped, spin = r.get("gateway"), r.get("gateway_spin")
    if not shipped or not spin:
        return ""
    common = sorted({row["concurrency"] for row in shipped["levels"]} & {row["concurrency"] for row in spin["levels"]})
    rows = []
    for label, g in (("OMP_WAIT_POLICY=PASSIVE (as shipped)", shipped), ("GOMP_SPINCOUNT=300000 (libgomp's default)", spin)):
        paired = g["paired_c1"]
        rows.append([label, num(paired["gateway"]["p50_ms"]), num(paired["gateway"]["p50_ms"] / paired["fan_out"]["p50_ms"], 3)]
                    + [num(level(g["levels"], c)["complete_throughput_rps"], 2) for c in common]
                    + [" / ".join(num(v, 3) for v in level(g["levels"], common[-1])["cpu_s_per_request"].values())
                       if common else "–"])
    return render("benchmarks/spin.md.j2", rows=rows, common=common)
