"""Replicas: one ocr_nb replica against two (and three) on the single-node Swarm stack (bench/replicas.py)."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import num, table, write_marked_section

START, END = "<!-- replicas:start -->", "<!-- replicas:end -->"


def replicas_section(record: dict) -> str:
    m, rows, st = record["machine"], record["rows"], record["settings"]
    base = rows[0]["complete_per_s"] if rows and rows[0]["complete_per_s"] else None
    body = [[row["replicas"], num(row["answers_per_s"], 2), num(row["complete_per_s"], 2),
             num(row["complete_per_s"] / base, 2) if base else "–", num(row["p50_ms"], 0), num(row["p99_ms"], 0),
             row["degraded"], row["failed"],
             ", ".join(str(n) for _, n in sorted(row["ocr_answers_per_replica"].items())) or "–",
             num(row["load_average_after"], 1)] for row in rows]
    return "\n".join([
        START,
        "## Replicas (the Swarm stack: one ocr_nb replica against two and three)",
        "",
        f"Recorded {m['started_utc']} with `{m['command'].strip()}` (`make bench-replicas`): deploy/swarm/stack.yml on "
        f"a single-node swarm on this machine ({m['nproc']} cores, {m['cpu_model']}), the stack's default limits "
        "(each member task at most 1 CPU, TORCH_THREADS=1; the gateway 0.5 CPU), scaled in place between windows. "
        f"**Weights: OCR real, CLIP SYNTHETIC** (the resilience bench's models; CLIP's cost is the real ViT-B-32's, its "
        f"answers mean nothing). Client: {st['threads']} closed-loop threads (one requests.Session each) over "
        f"{m['photos']} real photos from `{m.get('photo_source', 'grocery/val')}`, {num(st['warmup_s'], 0)} s of warm-up after every task is healthy, then "
        f"{num(st['seconds'], 0)} s measured. Latencies are of complete answers (every member in them). Load average "
        f"(1 min) before: {num(m['load_average_before'], 1)}.",
        "",
        table(["ocr_nb replicas", "answers/s", "complete/s", "complete/s ÷ 1 replica", "p50 ms", "p99 ms",
               "degraded", "failed", "OCR answers per replica", "load avg after"], body),
        "",
        _reading(rows, base, m["nproc"]),
        END,
    ])


def _reading(rows: list[dict], base: float | None, cores: int) -> str:
    """What the rows say, from their figures: the gain of each count over one replica."""
    if not base or len(rows) < 2:
        return "Too few replica counts were measured to compare."
    gains = "; ".join(f"{row['replicas']} replicas: {num(row['complete_per_s'] / base, 2)}× the complete answers/s "
                      f"of one" for row in rows[1:])
    return (f"{gains}. ocr_nb is the slowest member and each of its tasks is held to one CPU (its limit, one torch "
            f"thread), while all replicas, the CLIP members and the gateway share this node's {cores} cores: past "
            "them a replica only adds a process to share them. On a cluster each node brings its own cores, so "
            "throughput grows with nodes until the next slowest member (or the gateway, one task per node) is the "
            "limit; scale that one too.")


def write_section(record: dict, markdown: Path) -> Path:
    """Replace the marked Replicas section of `markdown` (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, replicas_section(record))
