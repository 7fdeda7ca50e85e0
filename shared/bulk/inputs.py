"""What a bulk job reads: a folder of images, a `path[,label]` CSV or a Parquet file of paths, as one table.

Every input becomes a row, numbered in input order (`row`, the id that resume and the output key on); a row that
names no usable path keeps its error instead of being dropped.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shared.errors import DatasetError
from shared.images import IMAGE_SUFFIXES

SCHEMA = pa.schema([("row", pa.int64()), ("path", pa.string()), ("label", pa.string()), ("error", pa.string())])


def read_inputs(source: Path) -> pa.Table:
    """The rows of a folder (every image under it, recursively, sorted), a CSV or a Parquet file.

    Local paths only; an object store would plug in here as a listing of URIs (pyarrow.fs reads s3://, gs://)
    and in `work.read_bytes`.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        rows = [(path, None, None) for path in paths]
    elif source.is_file() and source.suffix.lower() == ".csv":
        rows = _csv_rows(source)
    elif source.is_file() and source.suffix.lower() == ".parquet":
        rows = _parquet_rows(source)
    elif source.exists():
        raise DatasetError(f"{source} is neither a folder of images, a .csv with header path[,label] nor a .parquet "
                           "file with a path column.")
    else:
        raise DatasetError(f"Input {source} does not exist.")
    if not rows:
        raise DatasetError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}): nothing to classify.")
    path, label, error = zip(*rows)
    return pa.table({"row": pa.array(range(len(rows)), pa.int64()), "path": list(path), "label": list(label),
                     "error": list(error)}, schema=SCHEMA)


def fingerprint(table: pa.Table) -> str:
    """sha256 of the rows' paths in order: a resumed job must read the same input, or row ids mean other photos."""
    digest = hashlib.sha256()
    for path in table.column("path").to_pylist():
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


def _csv_rows(source: Path) -> list[tuple[str, str | None, str | None]]:
    with open(source, newline="", encoding="utf-8-sig", errors="replace") as fh:
        lines = list(csv.reader(fh))
    header = [cell.strip().lower() for cell in lines[0]] if lines else []
    if header not in (["path"], ["path", "label"]):
        raise DatasetError(f"{source} must start with the header 'path' or 'path,label'; found {','.join(header)!r}.")
    return [_csv_row(source, number, cells, len(header))
            for number, cells in enumerate(lines[1:], start=2) if any(cell.strip() for cell in cells)]


def _csv_row(source: Path, number: int, cells: list[str], width: int) -> tuple[str, str | None, str | None]:
    """(path, label, error): a malformed line keeps its text as the path and says what is wrong with it."""
    text = ",".join(cells)
    if len(cells) > width or not cells[0].strip():
        return text, None, f"{source.name} line {number}: expected {'path,label' if width == 2 else 'path'}"
    label = (cells[1].strip() or None) if len(cells) > 1 else None
    return _resolved(source, cells[0].strip()), label, None


def _parquet_rows(source: Path) -> list[tuple[str, str | None, str | None]]:
    try:
        names = pq.read_schema(source).names
        if "path" not in names:
            raise DatasetError(f"{source} has no 'path' column; its columns: {', '.join(names)}.")
        table = pq.read_table(source, columns=["path"] + (["label"] if "label" in names else []))
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{source} could not be read as Parquet: {exc}") from None
    paths = table.column("path").to_pylist()
    labels = table.column("label").to_pylist() if "label" in names else [None] * len(paths)
    return [(_resolved(source, str(p)), None if label is None else str(label), None) if p else
            ("", None, "no path") for p, label in zip(paths, labels)]


def _resolved(listing: Path, path: str) -> str:
    # Relative paths are relative to the listing file, so it and its images can move together (as train's CSVs).
    return path if Path(path).is_absolute() else str(listing.parent / path)
