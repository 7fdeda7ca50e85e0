"""Feature extraction and training: cold and cached extractor runs, the whole stack's training time."""
from __future__ import annotations

from bench.report.format import num, table


def features_section(r: dict) -> str:
    """Feature extraction cold and cached, and the training time."""
    f = r.get("features")
    if not f:
        return ""
    rows = [[kind, "cold (empty cache)", num(c["seconds"], 1), num(c["model_load_s"], 1), num(c["images_per_s"], 2),
             num(c["images_per_s_without_load"], 2)] for kind, c in f["cold"].items()]
    rows.append(["clip + ocr", "from the cache", num(f["cached"]["seconds"], 2), "–", num(f["cached"]["images_per_s"], 0),
                 "–"])
    train = r.get("train", {})
    return "\n\n".join([
        "## Feature extraction in training",
        f"`shared.features.extract.extract_features` on {f['images']} grocery training photos (348 px), batch size "
        f"CLIP_BATCH_SIZE, one process. Cold runs include loading the extractor.",
        table(["extractor", "cache", "seconds", "of which model load", "images/s", "images/s without load"], rows),
        f"Training the whole stack afterwards (features from the cache, 3 folds): {num(train.get('seconds'), 1)} s."
        if train else ""])
