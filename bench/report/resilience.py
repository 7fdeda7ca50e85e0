"""Resilience: the local stack under overload, with a frozen member, and over a soak (bench/resilience.py).

`resilience_section` renders bench/results/resilience.json between the markers below; `write_section` replaces
only that part of BENCHMARKS.md (or appends it), so `python -m bench.resilience` leaves every other section as is.
"""
from __future__ import annotations

from pathlib import Path

from bench.report.format import num, table, verdict, write_marked_section

START, END = "<!-- resilience:start -->", "<!-- resilience:end -->"
HEALTH_GOAL_MS, P99_GOAL_RATIO, BREAKER_GOAL_RATIO, SOAK_GOAL_PCT = 100.0, 2.0, 1.5, 10.0


def _goals(res: dict) -> list[list]:
    ov, br, so = res.get("overload", {}), res.get("breaker", {}), res.get("soak", {})
    deadline_ms = res["machine"]["settings"]["deadline_s"] * 1000
    rows = []
    levels = ov.get("levels", [])
    if levels:
        top = max(levels, key=lambda row: row["concurrency"])
        best = max(levels, key=lambda row: row["throughput_rps"])
        slowest = top["slowest_any_ms"]
        rows.append([f"slowest response (200 or 503) at concurrency {top['concurrency']}, s",
                     num(_s(slowest), 2), f"≤ deadline {num(deadline_ms / 1000, 0)} s",
                     verdict(slowest, deadline_ms, True)])
        ratio = top["p99_ms"] / best["p99_ms"] if top["p99_ms"] and best["p99_ms"] else None
        rows.append([f"answered p99 at concurrency {top['concurrency']} ÷ p99 at the best concurrency "
                     f"({best['concurrency']}, {num(best['throughput_rps'], 2)} answers/s)", num(ratio, 2),
                     f"≤ {P99_GOAL_RATIO:g}", verdict(ratio, P99_GOAL_RATIO, True)])
        if "complete_rps" in top:  # a degraded answer (a member missing) is fast: judge by complete answers too
            best_c = max(levels, key=lambda row: row["complete_rps"])
            ratio_c = top["p99_ms"] / best_c["p99_ms"] if top["p99_ms"] and best_c["p99_ms"] else None
            rows.append([f"the same, the best concurrency by **complete** answers/s ({best_c['concurrency']}, "
                         f"{num(best_c['complete_rps'], 2)}/s; at {top['concurrency']}: "
                         f"{top['complete']} of {top['answered']} answers complete)", num(ratio_c, 2),
                         f"≤ {P99_GOAL_RATIO:g}", verdict(ratio_c, P99_GOAL_RATIO, True)])
        others = [row for row in levels if row is not top and row["p99_ms"]]
        if best is top and others:  # the ratio is 1 by construction: set it beside the next best level
            runner_up = max(others, key=lambda row: row["throughput_rps"])
            rows.append([f"(the top level was the best: p99 there ÷ p99 at the next best, concurrency "
                         f"{runner_up['concurrency']}, {num(runner_up['throughput_rps'], 2)} answers/s)",
                         num(top["p99_ms"] / runner_up["p99_ms"], 2), "(context)", ""])
    health = ov.get("health_live_at_max")
    if health:
        rows.append([f"/v2/health/live, slowest of {health['probes']} probes at concurrency "
                     f"{levels[-1]['concurrency'] if levels else '?'}, ms", num(health["max_ms"], 1),
                     f"< {HEALTH_GOAL_MS:g}", verdict(health["max_ms"], HEALTH_GOAL_MS - 1e-9, True)])
    if br:
        rows.append(["p50 with clip_svm frozen (breaker open) ÷ p50 normal, concurrency 2", num(br.get("ratio"), 2),
                     f"≤ {BREAKER_GOAL_RATIO:g}", verdict(br.get("ratio"), BREAKER_GOAL_RATIO, True)])
    for name, s in so.get("services", {}).items():
        rows.append([f"soak RSS growth, {name} (master + workers), %", num(s["growth_pct"], 1),
                     f"≤ {SOAK_GOAL_PCT:g}", verdict(s["growth_pct"], SOAK_GOAL_PCT, True)])
    return rows


def _missing(row: dict) -> str:
    missing = row.get("missing_members") or {}
    return "; ".join(f"{member}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                     for member, kinds in missing.items()) or "–"


def _load_range(samples: list[dict]) -> str:
    loads = [s["load_1m"] for s in samples if "load_1m" in s]
    return f"{num(min(loads), 1)}–{num(max(loads), 1)}" if loads else "not recorded"


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def resilience_section(r: dict, plot: Path | None = None, out: Path | None = None) -> str:
    """The Resilience section, markers included; empty without results."""
    record = r.get("resilience")
    if not record:
        return ""
    res = record["result"] if "result" in record else record
    m = res["machine"]
    st = m["settings"]
    ov, br, so = res.get("overload", {}), res.get("breaker", {}), res.get("soak", {})
    parts = [START, "## Resilience (the local stack: overload, a frozen member, a soak)",
             f"Recorded {record.get('recorded_utc', m.get('started_utc', '?'))} UTC with `{m['command']}` "
             f"(`make bench-resilience`), {num(m.get('wall_s', 0) / 60, 1)} min in all. One "
             f"`python -m shared serve --synthetic` (circus, four gunicorns, {st['workers']} worker each; "
             f"{_running(m, st)}) started once "
             f"(ready in {num(m.get('ready_s'), 0)} s) on **{m['nproc']} cores** ({m['cpu_model']}, no GPU), "
             f"shared with the load client and with whatever else ran on the machine (load average "
             f"{num(m['load_average_before'][0], 2)} before, {num(m['load_average_after'][0], 2)} after). "
             "Shipped settings: deadline "
             f"{num(st['deadline_s'], 0)} s, member timeout {num(st['member_timeout_s'], 0)} s, breaker after "
             f"{st['breaker_failures']} failures, cool-off {num(st['breaker_cooloff_s'], 0)} s.",
             "**Weights: OCR real, CLIP SYNTHETIC** (the full-size offline weights of `bench/run.py`: EasyOCR's "
             "released CRAFT + english_g2, and a randomly initialised ViT-B-32): CLIP's cost is the real "
             "architecture's, its answers are meaningless — nothing here is CLIP's accuracy. The model was trained "
             f"on {m['trained_on']}; requests are {m['photos']['count']} distinct photos from "
             f"`{m['photos']['source']}`, sent round-robin. Client: {m['client']}.",
             "### Goals", table(["figure", "measured", "goal", ""], _goals(res))]
    if ov.get("levels"):
        rows = [[row["concurrency"], row["answered"], row.get("complete", "–"), _missing(row), row["refused_503"],
                 row["other"], num(100 * (row["share_503"] or 0), 1), num(row["p50_ms"], 0), num(row["p99_ms"], 0),
                 num(row["slowest_answer_ms"], 0), num(row["slowest_503_ms"], 0), num(row["throughput_rps"], 2),
                 num(row.get("complete_rps"), 2), num(row.get("complete_p50_ms"), 0),
                 num(row.get("complete_p99_ms"), 0), num(row.get("load_average_1m"), 1)]
                for row in ov["levels"]]
        parts += ["### Overload (closed loop against the gateway)",
                  f"Each level {num(ov['seconds_per_level'], 0)} s; throughput counts the 200s finished within it. "
                  "Latencies are of the 200s (answers); a 503 carries Retry-After.",
                  "An answer is *complete* when every member is in it; a *degraded* one (still a 200) left a member "
                  "out (timed out, or its breaker open) and is faster for it, so the complete answers are counted "
                  "apart. " + (ov["levels"][0].get("complete_source", "") and
                               f"(Complete columns: {ov['levels'][0]['complete_source']}.)"),
                  table(["concurrency", "answered (200)", "complete", "member missing", "503", "other",
                         "503 share %", "p50 ms", "p99 ms", "slowest answer ms", "slowest 503 ms", "answers/s",
                         "complete/s", "complete p50 ms", "complete p99 ms", "load avg 1 min, after"], rows)]
        if plot is not None and out is not None:
            parts.append(f"![latency and 503 share against concurrency]({plot.relative_to(out.parent)})")
    health = ov.get("health_live_at_max")
    if health:
        parts.append(f"**/v2/health/live during concurrency {ov['levels'][-1]['concurrency']}** (a separate process, "
                     f"a fresh connection every 200 ms): {health['probes']} probes, {health['errors']} not 200, "
                     f"p50 {num(health['p50_ms'], 1)} ms, p99 {num(health['p99_ms'], 1)} ms, max "
                     f"{num(health['max_ms'], 1)} ms, {health['over_100ms']} at or over 100 ms.")
    if res.get("before"):
        parts += _before_and_after(res["before"], ov.get("levels", []), health)
    if br:
        parts += ["### Breaker: clip_svm frozen (SIGSTOP to its master and workers), concurrency 2",
                  table(["phase", "answers", "p50 ms", "p99 ms"],
                        [["normal", br["normal"]["answers"], num(br["normal"]["p50_ms"], 0),
                          num(br["normal"]["p99_ms"], 0)],
                         ["breaker open", br["open"]["answers"], num(br["open"]["p50_ms"], 0),
                          num(br["open"]["p99_ms"], 0)]]),
                  f"Ratio {num(br.get('ratio'), 2)}. From the SIGSTOP until two answers in a row said `circuit open` "
                  f"for clip_svm: {num(br['opening']['seconds'], 1)} s, {br['opening']['answers']} answers, the "
                  f"slowest {num(br['opening']['slowest_ms'], 0)} ms (they wait out the member timeout). While open: "
                  f"{br['open']['without_clip_svm']} of {br['open']['answers']} answers degraded without clip_svm, "
                  f"{br['open']['non_200']} not 200 (reason: `{br['open']['reason_example']}`). After SIGCONT the "
                  f"stack answered whole again in {num(br['whole_again_s'], 1)} s."]
    if so.get("services"):
        rows = [[name, num(s["start_mib"], 0), num(s["end_mib"], 0), num(s["peak_mib"], 0), num(s["growth_pct"], 1),
                 f"{num(s['worker_start_mib'], 0)} → {num(s['worker_end_mib'], 0)}", "yes" if s["restarted"] else "no"]
                for name, s in so["services"].items()]
        load = so["load"]
        parts += [f"### Soak: concurrency 2 for {num(so['seconds'] / 60, 1)} min",
                  f"After {num(so['warmup_s'], 0)} s of warm-up at the same load; RSS (psutil) of each service's "
                  f"gunicorn master + workers every {num(so['every_s'], 0)} s, {len(so['samples'])} samples (the "
                  "total double-counts pages the fork shares). "
                  f"Load meanwhile: {load['answered']} answers, {load['refused_503']} 503, p50 "
                  f"{num(load['p50_ms'], 0)} ms, p99 {num(load['p99_ms'], 0)} ms, "
                  f"{num(load['throughput_rps'], 2)} answers/s; machine load average (1 min) "
                  f"{_load_range(so['samples'])}.",
                  table(["service", "start MiB", "end MiB", "peak MiB", "growth %", "worker MiB", "restarted"], rows)]
    if res.get("notes"):
        parts += ["### What this run showed", "\n".join(f"- {note}" for note in res["notes"])]
    parts.append(END)
    return "\n\n".join(parts)


def plot_resilience(res: dict, out: Path) -> Path | None:
    """p50/p99 of the answers (left axis) and the 503 share (right axis) against concurrency."""
    levels = res.get("overload", {}).get("levels")
    if not levels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [row["concurrency"] for row in levels]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=80)
    ax.plot(c, [(row["p50_ms"] or 0) / 1000 for row in levels], marker="o", label="p50 (200s)")
    ax.plot(c, [(row["p99_ms"] or 0) / 1000 for row in levels], marker="o", label="p99 (200s)")
    if all(row.get("complete_p50_ms") for row in levels):
        ax.plot(c, [row["complete_p50_ms"] / 1000 for row in levels], marker=".", linestyle="--",
                label="p50, complete answers only")
    before = res.get("before")
    if before:  # the code before a change, on the same axes
        was = sorted(before["levels"], key=lambda row: row["concurrency"])
        ax.plot([row["concurrency"] for row in was], [(row["p99_ms"] or 0) / 1000 for row in was], marker="x",
                linestyle=":", color="grey", label=f"p99 before ({before['label'].split(',')[0]})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(c, [str(v) for v in c])
    ax.set_xlabel("concurrency (closed loop, gateway)")
    ax.set_ylabel("latency, s")
    ax.grid(alpha=0.3)
    share = ax.twinx()
    share.bar(c, [100 * (row["share_503"] or 0) for row in levels], width=[v * 0.25 for v in c], alpha=0.25,
              color="tab:red", label="503 share")
    share.set_ylabel("503 share, %")
    share.set_ylim(0, 100)
    lines, labels = ax.get_legend_handles_labels()
    bars, bar_labels = share.get_legend_handles_labels()
    ax.legend(lines + bars, labels + bar_labels, fontsize=7, loc="upper left")
    fig.suptitle(f"{res['machine']['nproc']} CPU cores, no GPU — OCR real, CLIP SYNTHETIC weights", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _before_and_after(before: dict, levels: list[dict], health: dict | None) -> list[str]:
    """This run's overload levels beside an earlier run's (the code before a change), level by level."""
    old = {row["concurrency"]: row for row in before["levels"]}
    rows = []
    for row in levels:
        was = old.get(row["concurrency"])
        if was is None:
            continue
        rows.append([row["concurrency"]] + [f"{num(was[key], d)} → {num(row[key], d)}" for key, d in (
            ("throughput_rps", 2), ("complete_rps", 2), ("p50_ms", 0), ("p99_ms", 0), ("slowest_any_ms", 0))]
            + [f"{num(100 * (was['share_503'] or 0), 0)} → {num(100 * (row['share_503'] or 0), 0)}"])
    was_health = before.get("health") or {}
    running = before.get("running")
    setup = (f"gateway {running['stacking']}, ocr_nb {running['ocr_nb']}, CLIP {running['clip']} running"
             if running else f"every service {before['settings']['threads']} running")
    return [f"### Before and after: {before['label']}",
            f"The same overload levels on a checkout of the code before ({setup}, "
            f"{before['settings']['admission_queue']} queued; `{before.get('command') or 'python -m bench.resilience'}`"
            f", recorded {before.get('recorded_utc', '?')} UTC on this machine) → this run.",
            table(["concurrency", "answers/s", "complete/s", "p50 ms", "p99 ms", "slowest response ms",
                   "503 share %"], rows),
            f"/v2/health/live at the top level, slowest probe: {num(was_health.get('max_ms'), 1)} → "
            f"{num((health or {}).get('max_ms'), 1)} ms."]


def _running(m: dict, st: dict) -> str:
    """How many predictions each service runs at once, and queues."""
    run = m.get("running")
    if not run:  # recorded before the limits differed per service
        return f"{st['threads']} running + {st['admission_queue']} queued predictions each"
    return (f"predictions running at once: gateway {run['stacking']}, ocr_nb {run['ocr_nb']}, each CLIP member "
            f"{run['clip']}; {st['admission_queue']} more may queue in each")


def write_section(record: dict, markdown: Path, plot_out: Path) -> Path:
    """Replace the marked Resilience section of `markdown` (or add it); nothing else changes."""
    plot = plot_resilience(record["result"], plot_out)
    return write_marked_section(markdown, START, END, resilience_section({"resilience": record}, plot, markdown))
