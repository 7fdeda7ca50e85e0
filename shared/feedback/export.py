"""The labelled history as a dataset: `python -m shared history export --labelled --out DIR`.

DIR/labels.csv (`path,label`, paths relative to it) is what `train --data`, `train --calibration-data`,
`evaluate --data` and `restack --data` read as they are; DIR/images/ holds the photos; DIR/predictions.jsonl
keeps, per photo, what the stack and each member answered (`restack` refits the stack on it without
extracting a feature).

One row per image (sha256): the newest label wins. Left out, and counted: records of images the model was trained
or tested on (unless include_training: no new evidence for calibration or quality), and records whose full image
was not kept (HISTORY_PENDING_IMAGES, HISTORY_KEEP_IMAGES).
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shared.errors import DatasetError, NotFound
from shared.history import HistoryFilter, HistoryStore

LABELS_CSV, PREDICTIONS, IMAGES = "labels.csv", "predictions.jsonl", "images"


@dataclass
class Exported:
    """What an export wrote and what it left out, by reason."""

    out: Path
    photos: int = 0
    classes: Counter = field(default_factory=Counter)
    left_out: Counter = field(default_factory=Counter)

    def line(self) -> str:
        skipped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self.left_out.items()))
        return (f"Exported {self.photos} labelled photos of {len(self.classes)} classes to {self.out / LABELS_CSV}"
                + (f"; left out: {skipped}" if skipped else "") + ".")


def export_labelled(store: HistoryStore, out: Path, flt: HistoryFilter = HistoryFilter(),
                    include_training: bool = False) -> Exported:
    """Write the labelled records the filter selects as a dataset in `out` (new or empty)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not an empty folder; export into a new one.")
    (out / IMAGES).mkdir(parents=True, exist_ok=True)
    done, seen = Exported(out), set()
    with open(out / LABELS_CSV, "w", newline="", encoding="utf-8") as labels_fh, \
            open(out / PREDICTIONS, "w", encoding="utf-8") as predictions_fh:
        labels = csv.writer(labels_fh)
        labels.writerow(["path", "label"])
        for item in store.iter_labelled(flt):  # newest first: the first of an image is its latest label
            reason = _left_out(item, seen, include_training)
            if reason is None:
                reason = _write_photo(store, item, out, labels, predictions_fh)
            if reason is not None:
                done.left_out[reason] += 1
                continue
            seen.add(item["sha256"])
            done.photos += 1
            done.classes[item["true_label"]] += 1
    return done


def _left_out(item: dict, seen: set[str], include_training: bool) -> str | None:
    if item["sha256"] in seen:
        return "older_labels_of_the_same_photo"
    if item["in_training"] and not include_training:
        return "photos_the_model_was_trained_or_tested_on"
    if not item["has_image"]:
        return "records_without_their_full_image"
    return None


def _write_photo(store: HistoryStore, item: dict, out: Path, labels: csv.writer, predictions_fh: io.TextIOBase
                 ) -> str | None:
    try:
        data = store.image(item["id"])
    except NotFound:  # dropped by retention since it was listed
        return "records_without_their_full_image"
    relative = f"{IMAGES}/{item['id']}_{item['sha256'][:12]}.{_extension(data)}"
    (out / relative).write_bytes(data)
    labels.writerow([relative, item["true_label"]])
    predictions_fh.write(json.dumps({
        "path": relative, "label": item["true_label"], "record_id": item["id"], "request_id": item["request_id"],
        "sha256": item["sha256"], "time": item["time"], "model_version": item["model_version"],
        "predicted": item["label"], "probas": item["probas"], "in_training": item["in_training"],
        "members": {name: m.get("probas") for name, m in item["members"].items() if m.get("ok", True)},
        "synthetic_weights": item["synthetic_weights"],
    }, separators=(",", ":")) + "\n")
    return None


def _extension(data: bytes) -> str:
    try:
        fmt = Image.open(io.BytesIO(data)).format or "bin"
    except Exception:  # noqa: BLE001 - the bytes were served as an image; keep them whatever PIL says now
        return "bin"
    return {"jpeg": "jpg"}.get(fmt.lower(), fmt.lower())
