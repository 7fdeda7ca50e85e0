"""read_inputs: a folder, a path[,label] CSV or a Parquet file of paths becomes numbered rows; bad lines keep an error."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.bulk.inputs import fingerprint, read_inputs
from shared.errors import DatasetError


def test_a_folder_lists_its_images_recursively_in_order(make_image_files, tmp_path: Path) -> None:
    paths = make_image_files(3)
    (tmp_path / "images" / "deeper").mkdir()
    (tmp_path / "images" / "deeper" / "x.jpg").write_bytes(b"not checked here")
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    table = read_inputs(tmp_path / "images")
    assert table.column("row").to_pylist() == [0, 1, 2, 3]
    assert table.column("path").to_pylist() == sorted([*map(str, paths), str(tmp_path / "images/deeper/x.jpg")])
    assert table.column("label").null_count == 4 and table.column("error").null_count == 4


def test_a_csv_keeps_labels_resolves_relative_paths_and_marks_bad_lines(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\na.png,cat\n/abs/b.png,\n,dog\nc.png,cat,extra\n\nd.png,dog\n")
    table = read_inputs(listing).to_pylist()
    assert [r["row"] for r in table] == [0, 1, 2, 3, 4]
    assert table[0] == {"row": 0, "path": str(tmp_path / "a.png"), "label": "cat", "error": None}
    assert table[1]["path"] == "/abs/b.png" and table[1]["label"] is None
    assert table[2]["error"] == "list.csv line 4: expected path,label" and table[2]["path"] == ",dog"
    assert table[3]["error"] == "list.csv line 5: expected path,label"
    assert table[4]["path"] == str(tmp_path / "d.png") and table[4]["error"] is None


def test_a_parquet_file_of_paths(tmp_path: Path) -> None:
    pq.write_table(pa.table({"path": ["a.png", None, "/x/b.png"], "label": ["cat", "dog", None]}),
                   tmp_path / "list.parquet")
    table = read_inputs(tmp_path / "list.parquet").to_pylist()
    assert [(r["path"], r["label"], r["error"]) for r in table] == [
        (str(tmp_path / "a.png"), "cat", None), ("", None, "no path"), ("/x/b.png", None, None)]


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no images"),
    (lambda d: d / "missing", "does not exist"),
    (lambda d: (d / "x.csv").write_text("file,class\na,b\n") and d / "x.csv", "header 'path' or 'path,label'"),
    (lambda d: (d / "x.txt").write_text("a") and d / "x.txt", "neither a folder"),
    (lambda d: pq.write_table(pa.table({"file": ["a"]}), d / "x.parquet") or d / "x.parquet", "no 'path' column"),
    (lambda d: (d / "x.parquet").write_bytes(b"PAR1 nope") and d / "x.parquet", "could not be read as Parquet"),
])
def test_unusable_inputs_are_refused_with_a_reason(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_inputs(make(tmp_path))


def test_the_fingerprint_changes_with_the_paths_or_their_order(tmp_path: Path) -> None:
    one = pa.table({"path": ["a", "b"]})
    assert fingerprint(one) == fingerprint(pa.table({"path": ["a", "b"]}))
    assert fingerprint(one) != fingerprint(pa.table({"path": ["b", "a"]}))
    assert fingerprint(one) != fingerprint(pa.table({"path": ["a", "b", "c"]}))
