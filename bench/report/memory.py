"""Memory and start-up of every service, alone and together."""
from __future__ import annotations

from bench.report.format import num
from bench.report.markdown import render
from shared.members import GATEWAY, member_names

MEMBERS = member_names()  # the member table's names, in table order


def memory_and_startup_section(r: dict) -> str:
    """Time to ready and RSS of every service, alone and together."""
    rows = []
    for name, m in r.get("members", {}).items():
        rows.append([name, "alone", num(m["ready_s"], 1), num(m["rss_ready"]["largest_mib"], 0),
                     num(m["rss_after_load"]["largest_mib"], 0), num(m["rss_after_load"]["total_mib"], 0)])
    g = r.get("gateway")
    if g:
        for name in [*MEMBERS, GATEWAY]:
            rows.append([name, "together", num(g["ready_s"][name], 1), num(g["rss_ready"][name]["largest_mib"], 0),
                         num(g["rss_after_load"][name]["largest_mib"], 0),
                         num(g["rss_after_load"][name]["total_mib"], 0)])
    if not rows:
        return ""
    return render("benchmarks/memory.md.j2", rows=rows)
