"""Labelled image sets: an image folder (class = first-level subfolder, or the folder holding each image) or a
`path,label` CSV."""
from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.errors import DatasetError
from shared.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

CSV_HEADER = ["path", "label"]
# How an image folder names classes: "top" = the first-level subfolder (<root>/<class>/**/<image>),
# "leaf" = the folder holding the image (<root>/**/<class>/<image>, e.g. grocery's product folders).
LABEL_SOURCES = ("top", "leaf")


@dataclass(frozen=True)
class Dataset:
    """(path, label) records; classes sorted, class_id = index in `classes`."""

    records: list[tuple[Path, str]]
    classes: list[str]
    source: Path | None = None
    labels_from: str | None = None  # "top" / "leaf" for an image folder; None for a CSV (its labels are its own)
    class_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_index", {name: i for i, name in enumerate(self.classes)})

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.records]

    @property
    def labels(self) -> list[str]:
        return [label for _, label in self.records]

    @property
    def y(self) -> np.ndarray:
        """Class ids, (n,) int64."""
        return np.array([self.class_index[label] for label in self.labels], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        counted = Counter(self.labels)
        return {name: counted.get(name, 0) for name in self.classes}

    def subset(self, indices: Sequence[int]) -> "Dataset":
        """The same classes, only the given records (keeps class ids stable across splits)."""
        return Dataset([self.records[i] for i in indices], self.classes, self.source, self.labels_from)

    def summary(self) -> dict:
        summary = {"source": str(self.source) if self.source else None, "images": len(self.records),
                   "per_class": self.counts()}
        return summary | ({"labels": self.labels_from} if self.labels_from else {})


def load_dataset(path: Path | str, labels: str | None = None, min_classes: int = 2) -> Dataset:
    """Read an image folder (classes named as `labels` says: "top", the default, or "leaf") or a `path,label` CSV
    (its own labels); a set to train on needs at least two classes, one to score or calibrate with one."""
    path = Path(path)
    if path.is_dir():
        labels = labels or "top"
        records = folder_records(path, labels)
    elif path.is_file() and path.suffix.lower() == ".csv":
        if labels is not None:
            log.warning("labels=%s applies to image folders; %s names its classes in its label column", labels, path)
        labels = None
        records = _csv_records(path)
    elif path.exists():
        raise DatasetError(f"{path} is neither a folder of class subfolders nor a .csv file with header path,label.")
    else:
        raise DatasetError(f"Dataset {path} does not exist.")
    return _checked(Dataset(records, sorted({label for _, label in records}), path, labels), min_classes)


def folder_records(root: Path, labels: str = "top") -> list[tuple[Path, str]]:
    """(image, class) for every image in the subfolders of root, found recursively; the class is the first-level
    subfolder's name ("top") or that of the folder holding the image ("leaf")."""
    if labels not in LABEL_SOURCES:
        raise DatasetError(f"labels must be one of {', '.join(LABEL_SOURCES)}; got {labels!r}.")
    records = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        records += [(image, class_dir.name if labels == "top" else image.parent.name)
                    for image in _images_under(class_dir)]
    if not records:
        raise DatasetError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in class subfolders of {root}; "
                           "expected <root>/<class>/**/<image>.")
    return records


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _csv_records(path: Path) -> list[tuple[Path, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or [cell.strip().lower() for cell in rows[0]] != CSV_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DatasetError(f"{path} must start with the header 'path,label'; found {found!r}.")
    records = [_csv_record(path, number, row) for number, row in enumerate(rows[1:], start=2) if any(row)]
    if not records:
        raise DatasetError(f"{path} has a header but no rows.")
    return records


def _csv_record(csv_path: Path, number: int, row: list[str]) -> tuple[Path, str]:
    if len(row) != 2 or not row[0].strip() or not row[1].strip():
        raise DatasetError(f"{csv_path} line {number}: expected 'path,label', got {','.join(row)!r}.")
    image = Path(row[0].strip())
    # Relative paths are relative to the CSV, so the file and its images can move together.
    return (image if image.is_absolute() else csv_path.parent / image), row[1].strip()


def _checked(dataset: Dataset, min_classes: int) -> Dataset:
    if len(dataset.classes) < min_classes:
        raise DatasetError(f"{dataset.source} has {len(dataset.classes)} class(es) ({', '.join(dataset.classes)}); "
                           f"a classifier needs at least {min_classes} to learn from.")
    missing = [str(p) for p in dataset.paths if not p.is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(f"{dataset.source} lists {len(missing)} file(s) that do not exist: {shown}.")
    return dataset


def balanced_subset(records: Sequence[tuple[Path, str]], per_class: int, seed: int = 0) -> list[tuple[Path, str]]:
    """At most per_class records of each label, drawn at random with the seed, in original order."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, (_, label) in enumerate(records):
        by_label.setdefault(label, []).append(i)
    keep = {int(i) for idx in by_label.values() for i in rng.permutation(idx)[:per_class]}
    return [record for i, record in enumerate(records) if i in keep]


def write_csv(records: Sequence[tuple[Path, str]], out: Path) -> Path:
    """Write a `path,label` CSV (paths relative to the CSV's folder when under it, else absolute)."""
    out = Path(out)
    base = out.parent.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        writer.writerows([_relative(Path(p).resolve(), base), label] for p, label in records)
    return out


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
