"""What a process tree costs, read from /proc: CPU-seconds and resident memory (Linux only)."""
from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # the command name may contain spaces and parentheses


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    return parents


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (e.g. a gunicorn master and its workers)."""
    parents = _parents()
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the live processes in pid's tree."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def rss_bytes(pid: int) -> dict[int, int]:
    """Resident set size of each process in pid's tree ({pid: bytes})."""
    sizes = {}
    for p in process_tree(pid):
        try:
            sizes[p] = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except OSError:
            continue
    return sizes


def machine() -> dict:
    """Cores, CPU model and RAM of this machine."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "ram_gib": round(mem_kb / 2**20, 1)}
