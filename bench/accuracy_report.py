"""Renders ACCURACY.md and its plot from bench/results/accuracy/accuracy.json (and ocr_sizes.json, craft_int8.json when
present): the figures here, the page's shape in bench/report/templates/accuracy/."""
from __future__ import annotations

import json
from pathlib import Path

from bench.report.markdown import render

SIZES = Path("bench/results/accuracy/ocr_sizes.json")
INT8 = Path("bench/results/accuracy/craft_int8.json")
LOOP = Path("bench/results/accuracy/loop.json")
MODEL_NAMES = {"ocr_nb": "ocr_nb (real OCR)", "clip_svm": "clip_svm (SYNTHETIC CLIP)",
               "clip_logreg": "clip_logreg (SYNTHETIC CLIP)", "stack": "stack"}
ECE_GOAL, OCR_F1_GOAL = 0.05, 0.5
CONFIDENCE_GAP = 0.05  # mean confidence this far from the accuracy counts as under- or over-confident


def write_report(payload: dict, report: Path, plot: Path) -> None:
    """ACCURACY.md and the macro-F1 plot; the Loop section (bench/loop.py) is kept as it was."""
    from bench.report.format import write_marked_section
    from bench.report.loop import END, START, loop_section

    report.write_text(render_report(payload) + "\n", encoding="utf-8")
    if LOOP.exists():
        write_marked_section(report, START, END, loop_section(json.loads(LOOP.read_text())),
                             anchor="\n## What the real OCR reads")
    _plot(payload["tasks"], plot)


def render_report(payload: dict, sizes: Path | None = None, int8: Path | None = None) -> str:
    """ACCURACY.md's text from the results (ocr_sizes.json and craft_int8.json from SIZES and INT8 unless given)."""
    sizes, int8 = _load(sizes or SIZES), _load(int8 or INT8)
    tasks = payload["tasks"]
    return render("accuracy/ACCURACY.md.j2", p=payload, sizes=sizes, ece_goal=ECE_GOAL, ocr_f1_goal=OCR_F1_GOAL,
                  goals=_goals(tasks), chance=_chance(tasks), calibration=_calibration(payload),
                  tasks=[_task(task) for task in tasks.values()], reading=_reading(payload["ocr_reading"]),
                  variants=_variants(payload.get("text_variants", {})), size_choice=_sizes(sizes) if sizes is not None else None,
                  int8=_int8(int8) if int8 is not None else None)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _short(task: dict) -> str:
    """A task's letter, e.g. (b)."""
    return task["title"].split(" ")[0]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _goals(tasks: dict) -> dict:
    """The goals table's rows, and ocr_nb's macro-F1 on (b) when that task ran."""
    rows = []
    for task in tasks.values():
        models = task["models"]
        best = max((name for name in models if name != "stack"), key=lambda n: models[n]["macro_f1"])
        stack = models["stack"]
        halves = task.get("stack_calibration", {}).get("temperature_val_halves")
        calibrated = "n/a" if halves is None else f"{halves['ece']:.3f} ({_met(halves['ece'] <= ECE_GOAL)})"
        rows.append([task["title"], f"{stack['macro_f1']:.3f} vs {best} {models[best]['macro_f1']:.3f}",
                     _met(stack["macro_f1"] >= models[best]["macro_f1"]), f"{stack['ece']:.3f}",
                     _met(stack["ece"] <= ECE_GOAL), calibrated, _by_chance(task)])
    packages = tasks.get("b_packages")
    f1 = packages["models"]["ocr_nb"]["macro_f1"] if packages else None
    return {"rows": rows, "ocr_f1": f1, "ocr_f1_met": None if f1 is None else _met(f1 >= OCR_F1_GOAL)}


def _by_chance(task: dict) -> str:
    chance = task.get("stack_ece_by_chance")
    return f"{chance['median']:.3f} / {chance['p90']:.3f}" if chance else "–"


def _chance(tasks: dict) -> dict | None:
    """Which tasks' stack ECE is beyond chance, and where the goal is below what chance alone gives."""
    judged = {key: t for key, t in tasks.items() if t.get("stack_ece_by_chance")}
    if not judged:
        return None
    beyond = [_short(t) for t in judged.values() if t["models"]["stack"]["ece"] > t["stack_ece_by_chance"]["p90"]]
    return {"beyond": beyond, "within": [_short(t) for t in judged.values() if _short(t) not in beyond],
            "under": [_short(t) for t in judged.values()
                      if t["stack_ece_by_chance"]["median"] > ECE_GOAL and t["models"]["stack"]["ece"] > ECE_GOAL]}


def _calibration(payload: dict) -> dict | None:
    """The stack's calibration on val/ against within train/, as shipped and with isotonic calibration."""
    tasks = payload["tasks"]
    judged = {key: t["stack_calibration"] for key, t in tasks.items() if t.get("stack_calibration")}
    if not judged:
        return None

    def cell(c: dict) -> str:
        return f"{c['ece']:.3f} ({c['confidence_minus_accuracy']:+.3f})"

    halves = all("temperature_val_halves" in c for c in judged.values())
    rows = [[_short(tasks[key]), cell(c["shipped"]["train_nested"]), cell(c["shipped"]["val"]),
             cell(c["isotonic"]["train_nested"]), cell(c["isotonic"]["val"])]
            + ([cell(c["temperature_val_halves"])] if halves else []) for key, c in judged.items()]
    return {"halves": halves, "rows": rows, **_calibration_verdict(tasks, judged, payload.get("text_variants", {})),
            "temperature": _halves_verdict(tasks, judged) if halves else None}


def _calibration_verdict(tasks: dict, judged: dict, variants: dict) -> dict:
    def names(keep) -> list[str]:
        return [_short(tasks[key]) for key, c in judged.items() if keep(c)]

    def gap(c: dict, variant: str, side: str) -> float:
        return c[variant][side]["confidence_minus_accuracy"]

    shipped = next((m for name, m in variants.items() if "(shipped)" in name), None)
    return {"under": names(lambda c: gap(c, "shipped", "train_nested") < -CONFIDENCE_GAP),
            "over": names(lambda c: gap(c, "isotonic", "val") > CONFIDENCE_GAP),
            "isotonic_train": [(_short(tasks[key]), c["isotonic"]["train_nested"]["ece"]) for key, c in judged.items()],
            "isotonic_met": names(lambda c: c["isotonic"]["val"]["ece"] <= ECE_GOAL),
            "shipped_met": names(lambda c: c["shipped"]["val"]["ece"] <= ECE_GOAL),
            "shipped_ocr": shipped if shipped and "train_cv_macro_f1" in shipped else None}


def _halves_verdict(tasks: dict, judged: dict) -> dict:
    """The stack's ECE on val/ with a temperature fitted on the other half of val/, task by task."""
    runs = [{"task": _short(tasks[key]), "shipped": c["shipped"]["val"]["ece"], "ece": c["temperature_val_halves"]["ece"],
             "range": c["temperature_val_halves"]["temperature_range"],
             "chance": tasks[key].get("stack_ece_by_chance", {})} for key, c in judged.items()]
    return {"runs": runs, "met": [r["task"] for r in runs if r["ece"] <= ECE_GOAL],
            "chance": [r["task"] for r in runs if ECE_GOAL < r["ece"] <= r["chance"].get("p90", 0)],
            "halves": [(_short(tasks[key]), tasks[key]["val"] // 2) for key in judged]}


def _task(task: dict) -> dict:
    """One task's table of models and of degraded answers."""
    rows = [[MODEL_NAMES.get(name, name), *(f"{m[k]:.3f}" for k in ("accuracy", "macro_f1", "log_loss", "ece"))]
            for name, m in task["models"].items()]
    stack = task["models"]["stack"]
    degraded = [[name.replace("+", " + "), f"{m['accuracy']:.3f}", f"{m['accuracy'] - stack['accuracy']:+.3f}",
                 f"{m['macro_f1']:.3f}", f"{m['macro_f1'] - stack['macro_f1']:+.3f}"]
                for name, m in sorted(task["degraded"].items(), key=lambda kv: -kv[1]["macro_f1"])]
    return {"task": task, "rows": rows, "degraded": degraded}


def _reading(reading: dict) -> list[list[str]]:
    return [[split, str(r["photos"]), f"{r['word_recall']:.3f}", f"{r['no_text']:.3f}"] for split, r in reading.items()]


def _variants(variants: dict) -> dict | None:
    if not variants:
        return None
    cv = all("train_cv_macro_f1" in m for m in variants.values())
    rows = [[name, *([f"{m['train_cv_macro_f1']:.3f}"] if cv else []), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}"]
            for name, m in variants.items()]
    return {"cv": cv, "rows": rows}


def _craft_side(row: dict) -> str:
    return str(row.get("detect_side") or "as read")


def _sizes(sizes: dict) -> dict:
    """ocr_sizes.json's tables, and the figures behind the choice of OCR_MAX_SIDE and OCR_DETECT_SIDE."""
    rows = [[str(r["side"]), _craft_side(r), str(r["photos"]), f"{r['word_recall']:.3f}", f"{r['cpu_s_median']:.2f}",
             f"{r['boxes_per_photo']:.1f}"] for r in sizes["sides"]]
    big = [[str(r["side"]), f"{r['cpu_s_median']:.2f}", ", ".join(r["words"]) or "(none)"] for r in sizes["big_12mp"]]
    detect = _detect_sides(sizes["detect_sides"]) if "detect_sides" in sizes else None
    return {"rows": rows, "big": big, "detect_sides": detect, **_size_choice(sizes)}


def _detect_sides(rows: list[dict]) -> list[list[str]]:
    """The photos OCR_DETECT_SIDE was chosen on, CRAFT's input enlarged to each candidate."""
    base = rows[0]
    return [[_craft_side(r), str(r["photos"]), f"{r['word_recall']:.3f}",
             f"{(r['word_recall'] - base['word_recall']) * 100:+.1f}", f"{r['cpu_s_median']:.2f}",
             f"{r['cpu_s_median'] / base['cpu_s_median']:.2f}x", f"{r['boxes_per_photo']:.1f}"] for r in rows]


def _size_choice(sizes: dict) -> dict:
    """The figures behind OCR_MAX_SIDE and OCR_DETECT_SIDE: gain and cost of each size against native."""
    native = next(r for r in sizes["sides"] if r["side"] == "native" and not r.get("detect_side"))
    enlarged = [r for r in sizes["sides"] if r["side"] != "native"]
    big = {r["side"]: r["cpu_s_median"] for r in sizes["big_12mp"]}
    shipped = next((r for r in sizes["sides"] if r["side"] == "native" and r.get("detect_side")), None)
    return {"native": native, "gain": [round((r["word_recall"] - native["word_recall"]) * 100) for r in enlarged],
            "cost": [r["cpu_s_median"] / native["cpu_s_median"] for r in enlarged],
            "cheapest": min(r["cpu_s_median"] for r in enlarged), "big_640": big[640],
            "big_cost": [big[960] / big[640], big[1280] / big[640]], "shipped": shipped and {
                "side": shipped["detect_side"], "cpu_s": shipped["cpu_s_median"],
                "points": (shipped["word_recall"] - native["word_recall"]) * 100,
                "cost": shipped["cpu_s_median"] / native["cpu_s_median"],
                "choice": _detect_side_choice(sizes, shipped["detect_side"])}}


def _detect_side_choice(sizes: dict, shipped_side: int) -> dict | None:
    """Why OCR_DETECT_SIDE is what it is, from the candidates measured on train/ photos."""
    rows = {r["detect_side"]: r for r in sizes.get("detect_sides", [])}
    base, top, shipped = rows.get(0), rows.get(max(rows, default=0)), rows.get(shipped_side)
    if not (base and top and shipped) or top is shipped:
        return None
    return {"top": top, "shipped": shipped, "share": shipped["cpu_s_median"] / top["cpu_s_median"],
            "points": [(r["word_recall"] - base["word_recall"]) * 100 for r in (shipped, top)]}


def _int8(r: dict) -> dict:
    """craft_int8.json's table: each CRAFT against fp32 in word recall and CPU."""
    names = {"fp32": "fp32 (`OCR_DETECTOR=fp32`; the default on CUDA)",
             "int8": "static int8 recipe 2, rendered scenes (`OCR_DETECTOR=int8`; the default on CPU)",
             "int8_recipe1": "static int8 recipe 1 (every convolution; shipped before)",
             "int8_photos": f"static int8 recipe 2, {r['calibration_photos']} grocery `train/` photos"}
    rows = [[label, str(r[key]["photos"]), f"{r[key]['word_recall']:.3f}",
             "" if key == "fp32" else f"{-r[key]['recall_drop_points']:+.1f}" + (
                 f" ({r[key]['lost']} lost, {r[key]['gained']} gained)" if "lost" in r[key] else ""),
             "" if key == "fp32" or "word_jaccard" not in r[key] else
             f"{r[key]['word_jaccard']:.3f} ({r[key]['same_words']} same)",
             f"{r[key]['cpu_s_median']:.3f}", f"{r[key]['cpu_s_mean']:.3f}",
             f"{r['fp32']['cpu_s_median'] / r[key]['cpu_s_median']:.2f}x"] for key, label in names.items() if key in r]
    return {"rows": rows, "drop": r["int8"]["recall_drop_points"], "detect_side": r.get("ocr_detect_side")}


def _plot(tasks: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(MODEL_NAMES)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [task["models"].get(name, {}).get("macro_f1", 0) for task in tasks.values()]
        ax.bar(np.arange(len(tasks)) + i * width, values, width, label=MODEL_NAMES[name])
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t["title"].split(" ", 1)[0] for t in tasks.values()])
    ax.set_ylabel("macro-F1 on val/")
    ax.set_title("grocery val/: real EasyOCR, SYNTHETIC CLIP (CLIP bars are not CLIP's accuracy)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
