"""One small PNG for BENCHMARKS.md: throughput and p50 latency against concurrency, per service."""
from __future__ import annotations

from pathlib import Path

SYNTHETIC_NOTE = "synthetic full-size weights: speed is the architectures', predictions are meaningless"


def _series(r: dict) -> dict[str, list[dict]]:
    series = {f"{name} alone": m["levels"] for name, m in r.get("members", {}).items()}
    if r.get("batching", {}).get("rounds"):
        series["clip_svm alone, no batching"] = r["batching"]["rounds"][0]["unbatched"]["levels"]
    if "gateway" in r:
        series["gateway (members together)"] = r["gateway"]["levels"]
        if r["gateway"].get("fan_out_levels"):
            series["client's own fan-out (members together)"] = r["gateway"]["fan_out_levels"]
    return series


def plot_load(r: dict, out: Path) -> Path | None:
    """Throughput (left) and p50 latency (right) per concurrency level; None if nothing was measured."""
    series = _series(r)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for label, levels in series.items():
        c = [row["concurrency"] for row in levels]
        left.plot(c, [row["throughput_rps"] for row in levels], marker="o", label=label)
        right.plot(c, [row["p50_ms"] / 1000 for row in levels], marker="o", label=label)
    ticks = sorted({row["concurrency"] for levels in series.values() for row in levels})
    for ax, ylabel in ((left, "requests/s"), (right, "p50 latency, s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"{r.get('machine', {}).get('nproc', '?')} CPU cores, no GPU — {SYNTHETIC_NOTE}", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
