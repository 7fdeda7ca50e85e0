"""The results against the goals, and how to read the gateway ratios."""
from __future__ import annotations

from bench.report.batching import batching_ratio, batching_rounds
from bench.report.format import level, num, verdict
from bench.report.markdown import render
from bench.report.ratios import (
    best_throughput_ratio,
    fan_out_ratio,
    fan_out_throughput_ratio,
    paired_difference_ms,
    slowest_member_c1,
    throughput_ratios,
)
from shared.members import GATEWAY

GOALS = {
    "fan_out": 1.05,  # gateway p50 / ideal fan-out p50 at concurrency 1, at most
    "throughput": 0.9,  # gateway throughput / CPU-bound ideal, at least
    "batching": 1.5,  # clip_svm throughput at c=16, batched / unbatched, at least
    "ocr_12mp_s": 2.0,  # one 12 MP photo through OcrReader, at most
    "ocr_348_s": 0.5,  # one 348 px grocery photo through OcrReader (real weights: the recogniser reads real boxes)
}


def goals_section(r: dict) -> str:
    """The table of results against the goals, with how to read the gateway ratios (this run's figures)."""
    rows = []
    ratio = fan_out_ratio(r)
    rounds = r.get("gateway", {}).get("paired_c1", {}).get("gateway", {}).get("n", "?")
    rows.append([f"gateway p50 ÷ ideal fan-out p50, concurrency 1 ({rounds} paired rounds)", num(ratio, 3),
                 f"≤ {GOALS['fan_out']}", verdict(ratio, GOALS["fan_out"], at_most=True)])
    diff = paired_difference_ms(r)
    if diff is not None:
        rows.append(["gateway − ideal fan-out on the same image, median over the rounds, ms", num(diff, 1),
                     "(context)", ""])
    slow = slowest_member_c1(r)
    if slow and "gateway" in r:
        g = r["gateway"]["paired_c1"]["gateway"]["p50_ms"]
        rows.append([f"gateway p50 ÷ slowest member alone ({slow[0]}) p50, concurrency 1", num(g / slow[1], 3),
                     "(context)", ""])
    best = best_throughput_ratio(r)
    ratio = best[1] if best else None
    rows.append([f"gateway throughput (complete answers) ÷ CPU-bound ideal from the members' CPU cost serving "
                 f"this workload together, at the gateway's best concurrency ({best[0] if best else '?'})",
                 num(ratio, 3), f"≥ {GOALS['throughput']}", verdict(ratio, GOALS["throughput"], at_most=False)])
    if best:
        strict = throughput_ratios(r, alone=True).get(best[0])
        rows.append([f"the same, the ideal from each member's CPU cost alone on the machine (concurrency {best[0]})",
                     num(strict[2] if strict else None, 3), "(stricter; context)", ""])
        rows.append([f"gateway throughput ÷ the client's own fan-out throughput, concurrency {best[0]}",
                     num(fan_out_throughput_ratio(r, best[0]), 3), "(context)", ""])
    b = batching_ratio(r)
    gain = b[0] if b else None
    rows.append([f"clip_svm throughput with ÷ without dynamic batching, concurrency {b[1] if b else '?'}, "
                 f"mean of {len(batching_rounds(r))} interleaved rounds",
                 num(gain, 2), f"≥ {GOALS['batching']}", verdict(gain, GOALS["batching"], at_most=False)])
    o = r.get("ocr")
    t = o["read_12mp"]["median_s"] if o else None
    rows.append(["one 12 MP photo through OcrReader.read (decoded image), s", num(t, 2), f"≤ {GOALS['ocr_12mp_s']}",
                 verdict(t, GOALS["ocr_12mp_s"], at_most=True)])
    t = o["read_348"]["median_s"] if o else None
    rows.append(["one 348 px grocery photo (printed text) through OcrReader.read, s", num(t, 2),
                 f"≤ {GOALS['ocr_348_s']}", verdict(t, GOALS["ocr_348_s"], at_most=True)])
    return render("benchmarks/goals.md.j2", rows=rows, **_reading(r))


def _reading(r: dict) -> dict:
    """This run's figures for how to read the gateway ratios; none without the gateway's load levels."""
    g = r.get("gateway")
    if not g or not g.get("levels"):
        return {"reading": False}
    c1 = level(g["levels"], 1) or g["levels"][0]
    return {"reading": True, "own_ms": c1["cpu_s_per_request"].get(GATEWAY, 0) * 1000,
            "window_s": g["levels"][0].get("window_s", 12)}
