"""Dynamic batching (clip_svm alone): batched against unbatched, round by round."""
from __future__ import annotations

from bench.report.format import level, num
from bench.report.markdown import render


def batching_rounds(r: dict) -> list[tuple[float, float]]:
    """(batched, unbatched) req/s of clip_svm at the highest concurrency, one pair per round."""
    pairs = []
    for rnd in r.get("batching", {}).get("rounds", []):
        c = max(row["concurrency"] for row in rnd["unbatched"]["levels"])
        on, off = level(rnd["batched"]["levels"], c), level(rnd["unbatched"]["levels"], c)
        if on and off:
            pairs.append((on["throughput_rps"], off["throughput_rps"]))
    return pairs


def batching_ratio(r: dict) -> tuple[float, int] | None:
    """(mean over the rounds of batched ÷ unbatched throughput, concurrency)."""
    pairs = batching_rounds(r)
    if not pairs:
        return None
    c = max(row["concurrency"] for row in r["batching"]["rounds"][0]["unbatched"]["levels"])
    return sum(on / off for on, off in pairs) / len(pairs), c


def batching_section(r: dict) -> str:
    """clip_svm batched against unbatched, per round, with the gain."""
    b = batching_ratio(r)
    if not b:
        return ""
    rows = []
    for n, rnd in enumerate(r["batching"]["rounds"], 1):
        for mode, label in (("batched", "batched (as shipped)"), ("unbatched", "BATCH_MAX_SIZE=1")):
            for row in rnd[mode]["levels"]:
                rows.append([n, label, row["concurrency"], num(row["p50_ms"]), num(row["p95_ms"]),
                             num(row["throughput_rps"], 2), num(row["cpu_s_per_request"]["clip_svm"], 3),
                             num(row["mean_batch_size"].get("clip_svm"), 1)])
    old_wait = r.get("batch_wait_old")
    if old_wait:
        row = old_wait["levels"][0]
        rows.append(["–", "batched, BATCH_MAX_WAIT_MS=5 (the first default)", row["concurrency"], num(row["p50_ms"]),
                     num(row["p95_ms"]), num(row["throughput_rps"], 2), num(row["cpu_s_per_request"]["clip_svm"], 3),
                     num(row["mean_batch_size"].get("clip_svm"), 1)])
    gains = ", ".join(f"{num(on / off, 2)}×" for on, off in batching_rounds(r))
    c1 = [(level(rnd["batched"]["levels"], 1), level(rnd["unbatched"]["levels"], 1)) for rnd in r["batching"]["rounds"]]
    c1_diffs = ", ".join(f"{num(on['p50_ms'] - off['p50_ms'])} ms" for on, off in c1 if on and off)
    return render("benchmarks/batching.md.j2", rows=rows, concurrency=b[1], gains=gains, mean=b[0], c1_diffs=c1_diffs)
