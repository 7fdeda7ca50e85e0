"""The serving sections: each member alone, the gateway with its members, batching slack, idle threads."""
from __future__ import annotations

from typing import Any

from bench.report.format import level, num, table
from bench.report.ratios import busy_share, cpu_cost_fan_out, throughput_ratios
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order
LEVEL_HEADERS = ["concurrency", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s"]


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
    blocks = ["## Each member alone\n\nEach member started on its own (the other services stopped), warmed up, then "
              "loaded at each concurrency for a fixed time. CPU-s/request: user+system CPU of the member's "
              "gunicorn master and worker (from `/proc/<pid>/stat`) over the run ÷ requests answered."]
    for name, m in r["members"].items():
        blocks.append(f"### {name}\n\n" + table(LEVEL_HEADERS + ["CPU-s/request", "mean batch"],
                                                _level_rows(m["levels"], [name])))
    return "\n\n".join(blocks)


def gateway_section(r: dict) -> str:
    """The gateway with its members: paired c=1 latency, load tables, throughput ideals."""
    g = r.get("gateway")
    if not g:
        return ""
    paired = g["paired_c1"]
    services = [*MEMBERS, GATEWAY]
    lines = [
        "## Gateway (stacking), members started together",
        f"All four services run together (started one after another, each timed to ready). At concurrency 1 the "
        f"gateway and the **ideal fan-out** (this client sends the same image to the three members itself, in "
        f"parallel, and waits for the slowest) alternate request by request on the same images "
        f"({paired['gateway']['n']} rounds), so both see the same machine state.",
        table(["path, concurrency 1", "p50 ms", "p95 ms", "p99 ms"],
              [[name, num(row["p50_ms"]), num(row["p95_ms"]), num(row["p99_ms"])] for name, row in paired.items()]),
        f"Gateway under load; CPU-s/request for {' / '.join(services)}; mean batch for "
        f"{' / '.join(m for m in MEMBERS if m != 'ocr_nb')} (ocr_nb does not batch). A *degraded* answer is a 200 "
        f"that lacks a member (timed out or failed) — counted, never hidden. req/s counts answers completed while "
        f"every client worker was still sending.",
        table(LEVEL_HEADERS + ["degraded", "CPU-s/request", "mean batch"],
              [row[:7] + [lv.get("degraded", 0)] + row[7:] for row, lv in
               zip(_level_rows(g["levels"], services), g["levels"])]),
    ]
    if g.get("fan_out_levels"):
        lines += [
            "The client's own fan-out under the same closed loops (no gateway; CPU-s/request for the members):",
            table(LEVEL_HEADERS + ["degraded", "CPU-s/request", "mean batch"],
                  [row[:7] + [lv.get("degraded", 0)] + row[7:] for row, lv in
                   zip(_level_rows(g["fan_out_levels"], list(MEMBERS)), g["fan_out_levels"])]),
        ]
    together, alone = throughput_ratios(r), throughput_ratios(r, alone=True)
    if together:
        lines.append(
            f"**CPU-bound ideal throughput** = {r['machine']['nproc']} cores ÷ the sum of the three members' "
            f"CPU-seconds per request. *Together*: measured in the fan-out run just above, at the same concurrency, "
            f"the members sharing the cores as they do behind the gateway. *Alone*: each member measured on its own "
            f"machine-wide at that concurrency (the first section) — stricter, because alone under load the CLIP "
            f"members batch several requests per forward pass, which behind a plain fan-out they cannot: requests "
            f"reach them at the OCR member's pace, one by one; the gateway's batching slack wins part of it back "
            f"(the mean batch columns). The gateway's own CPU and the load "
            f"client's are in neither ideal, so they count against both ratios.")
        lines.append(table(
            ["concurrency", "member CPU-s/request together (ocr_nb + clip_svm + clip_logreg)", "ideal req/s",
             "gateway complete answers/s", "ratio", "ideal from members alone, req/s", "ratio", "fan-out req/s",
             "cores busy: gateway run / fan-out run"],
            [[c, " + ".join(num(v, 3) for v in cpu_cost_fan_out(r, c).values()), num(ideal, 2), num(got, 2),
              num(ratio, 3), num(alone[c][1] if c in alone else None, 2),
              num(alone[c][2] if c in alone else None, 3),
              num(level(g["fan_out_levels"], c)["throughput_rps"], 2),
              f"{num(busy_share(r, c) * 100, 0)} % / {num(busy_share(r, c, 'fan_out_levels') * 100, 0)} %"]
             for c, (got, ideal, ratio) in together.items()]))
    return "\n\n".join(lines)


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
    return "\n\n".join([
        "## Batching slack behind the gateway (gateway, members together)",
        "Under concurrent load the gateway grants the CLIP members a share of the OCR member's latency as "
        "`X-Batch-Slack-Ms` (README, *The services*), so that requests reaching them one at a time can still share "
        "a forward pass. The same gateway run granting none (`GATEWAY_SLACK_SHARE=0`, the behaviour before; "
        "concurrency 1 never gets slack, so it is not repeated):",
        table(["concurrency", "gateway", "complete req/s", "p50 ms", "p95 ms",
               "CPU-s/request (ocr_nb / clip_svm / clip_logreg / stacking)", "mean batch (clip_svm / clip_logreg)"],
              rows)])


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
    return "\n\n".join([
        "## Idle OpenMP threads: sleep or spin (gateway, members together)",
        "By default torch's OpenMP threads spin for a few milliseconds when idle before they sleep. Four services "
        "share the cores here, so one service's spinning threads take CPU from another's work. The gunicorn "
        "config therefore exports OMP_WAIT_POLICY=PASSIVE (Settings.omp_wait_policy). The same gateway run with "
        "libgomp's default spin count instead (fewer rounds):",
        table(["idle threads", "gateway p50 ms, c=1", "÷ fan-out"]
              + [f"complete req/s, c={c}" for c in common]
              + [f"CPU-s/request at c={common[-1] if common else '?'} (ocr_nb / clip_svm / clip_logreg / stacking)"],
              rows)])
