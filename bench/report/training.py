"""Feature extraction and training: cold and cached extractor runs, the whole stack's training time."""
from __future__ import annotations

from bench.report.format import num
from bench.report.markdown import render


def features_section(r: dict) -> str:
    """Feature extraction cold and cached, and the training time."""
    f = r.get("features")
    if not f:
        return ""
    rows = [[kind, "cold (empty cache)", num(c["seconds"], 1), num(c["model_load_s"], 1), num(c["images_per_s"], 2),
             num(c["images_per_s_without_load"], 2)] for kind, c in f["cold"].items()]
    rows.append(["clip + ocr", "from the cache", num(f["cached"]["seconds"], 2), "–", num(f["cached"]["images_per_s"], 0),
                 "–"])
    return render("benchmarks/features.md.j2", rows=rows, images=f["images"], train=r.get("train", {}))
