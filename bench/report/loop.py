"""ACCURACY.md's Loop section from bench/results/accuracy/loop.json (bench/loop.py): review queue, calibration and
restacking from labelled traffic, drift."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import write_marked_section
from bench.report.markdown import render

START, END = "<!-- loop:start -->", "<!-- loop:end -->"
REPORT = Path("ACCURACY.md")
ECE_GOAL, FALSE_ALARM_GOAL, WINDOWS_GOAL = 0.05, 0.05, 2


def loop_section(payload: dict) -> str:
    """The section, markers included."""
    tasks = []
    for key, task in payload["tasks"].items():
        halves = task["halves"]
        best = max(halves["members"].items(), key=lambda kv: kv[1]["macro_f1"])
        tasks.append({"key": key, **task, "best_member": best[0], "best_member_f1": best[1]["macro_f1"],
                      "restack_beats_best": halves["restacked"]["macro_f1"] >= best[1]["macro_f1"]})
    return render("accuracy/loop.md.j2", start=START, end=END, p=payload, tasks=tasks, ece_goal=ECE_GOAL,
                  false_alarm_goal=FALSE_ALARM_GOAL, windows_goal=WINDOWS_GOAL)


def write_section(payload: dict, markdown: Path = REPORT) -> Path:
    """Replace the marked Loop section of ACCURACY.md (or add it); nothing else changes."""
    return write_marked_section(markdown, START, END, loop_section(payload), anchor="\n## What the real OCR reads")
