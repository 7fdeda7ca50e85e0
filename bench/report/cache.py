"""The gateway's response cache: a repeated photo, and a stream where some photos repeat."""
from __future__ import annotations

from bench.report.format import num, verdict
from bench.report.markdown import render

HIT_MS_GOAL, STREAM_GAIN_GOAL = 5.0, 1.3


def cache_gain(r: dict) -> float | None:
    """Throughput with repeats ÷ throughput without, gateway with the cache on."""
    c = r.get("gateway_cache")
    if not c or not c["no_repeats"]["throughput_rps"]:
        return None
    return c["repeats"]["throughput_rps"] / c["no_repeats"]["throughput_rps"]


def cache_section(r: dict) -> str:
    """Hit latency and the repeated-stream gain against their goals."""
    c = r.get("gateway_cache")
    if not c:
        return ""
    hit, gain = (c.get("hit_at_gateway") or c["hit"])["p50_ms"], cache_gain(r)
    rows = [[f"a repeated photo (cache hit), p50 over {c['hit']['n']} requests, at the gateway (its request log), ms",
             num(hit, 2), f"≤ {HIT_MS_GOAL}", verdict(hit, HIT_MS_GOAL, at_most=True)],
            ["the same, seen by the client (httpx on the same 2 cores), ms", num(c["hit"]["p50_ms"], 2), "(context)", ""],
            [f"throughput, stream with {c['share']:.0%} repeats ÷ stream of unseen photos, concurrency "
             f"{c['repeats']['concurrency']}", num(gain, 3), f"≥ {STREAM_GAIN_GOAL}",
             verdict(gain, STREAM_GAIN_GOAL, at_most=False)]]
    levels = [[name, num(c[key]["throughput_rps"], 2), num(c[key]["p50_ms"]), num(c[key]["p95_ms"]), c[key]["n"]]
              for key, name in (("no_repeats", "unseen photos"), ("repeats", f"{c['share']:.0%} repeats"))]
    return render("benchmarks/cache.md.j2", rows=rows, levels=levels)
