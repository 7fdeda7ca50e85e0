"""Datasets: image folders, path,label CSVs, clear errors, and scripts/make_csv.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from shared.learning.data import balanced_subset, load_dataset, write_csv
from shared.errors import DatasetError

from tests.conftest import image_bytes

REPO = Path(__file__).resolve().parents[2]


def make_tree(root: Path, layout: dict[str, list[str]]) -> Path:
    """Write tiny images at root/<class>/<relative path> for each class."""
    for label, names in layout.items():
        for name in names:
            path = root / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image_bytes("PNG"))
    return root


def test_folder_classes_are_first_level_subfolders_with_images_found_recursively(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", {"dog": ["a.jpg", "deep/er/b.PNG", "c.webp"], "cat": ["x.jpeg", "y.gif"]})
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(image_bytes())  # not in a class folder
    dataset = load_dataset(root)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.counts() == {"cat": 2, "dog": 3}
    assert root / "dog" / "deep" / "er" / "b.PNG" in dataset.paths
    assert dataset.y.tolist() == [0, 0, 1, 1, 1]


def test_leaf_labels_name_each_image_by_the_folder_holding_it(tmp_path: Path) -> None:
    # grocery/train/Packages: <category>/<product>/<photo>; the product is the class.
    root = make_tree(tmp_path / "Packages", {"Juice": ["Bravo-Apple/1.jpg", "Bravo-Apple/2.jpg", "Tropicana/1.jpg"],
                                             "Milk": ["Arla/1.jpg", "Arla/2.png"]})
    dataset = load_dataset(root, labels="leaf")
    assert dataset.classes == ["Arla", "Bravo-Apple", "Tropicana"]
    assert dataset.counts() == {"Arla": 2, "Bravo-Apple": 2, "Tropicana": 1}
    assert dataset.summary()["labels"] == "leaf"
    assert dataset.subset([0]).labels_from == "leaf"
    assert load_dataset(root).classes == ["Juice", "Milk"]  # the default: first-level subfolders


def test_labels_apply_to_folders_only_and_must_be_known(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", {"a": ["x/1.png"], "b": ["y/1.png"]})
    csv = write_csv([(root / "a" / "x" / "1.png", "first"), (root / "b" / "y" / "1.png", "second")],
                    tmp_path / "d.csv")
    dataset = load_dataset(csv, labels="leaf")  # a CSV's label column names its classes
    assert dataset.classes == ["first", "second"] and dataset.labels_from is None
    assert "labels" not in dataset.summary()
    with pytest.raises(DatasetError, match="labels must be one of top, leaf"):
        load_dataset(root, labels="parent")


def test_every_supported_suffix_is_found(tmp_path: Path) -> None:
    names = [f"i{n}.{ext}" for n, ext in enumerate(["jpg", "jpeg", "png", "webp", "bmp", "gif", "tiff", "tif"])]
    dataset = load_dataset(make_tree(tmp_path, {"a": names, "b": ["z.png"]}))
    assert dataset.counts()["a"] == len(names)


def test_csv_paths_are_relative_to_the_csv_or_absolute(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "imgs", {"x": ["1.png"], "y": ["2.png"]})
    csv = tmp_path / "lists" / "set.csv"
    csv.parent.mkdir()
    csv.write_text(f"path,label\n../imgs/x/1.png,first\n{root / 'y' / '2.png'},second\n")
    dataset = load_dataset(csv)
    assert dataset.classes == ["first", "second"]
    assert all(p.is_file() for p in dataset.paths)


def test_write_csv_round_trips(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "imgs", {"x": ["1.png", "2.png"], "y": ["3.png"]})
    dataset = load_dataset(write_csv(load_dataset(root).records, tmp_path / "out.csv"))
    assert dataset.counts() == {"x": 2, "y": 1}


@pytest.mark.parametrize("content, message", [
    ("file,class\na.png,x\n", "must start with the header 'path,label'; found 'file,class'"),
    ("", "must start with the header 'path,label'; found 'an empty file'"),
    ("path,label\n", "has a header but no rows"),
    ("path,label\na.png\n", "line 2: expected 'path,label', got 'a.png'"),
    ("path,label\nmissing.png,x\nmissing2.png,y\n", "lists 2 file\\(s\\) that do not exist"),
])
def test_bad_csvs_are_explained(tmp_path: Path, content: str, message: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(csv)


def test_fewer_than_two_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"has 1 class\(es\) \(only\); a classifier needs at least 2"):
        load_dataset(make_tree(tmp_path, {"only": ["a.png", "b.png"]}))


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("hi")
    with pytest.raises(DatasetError, match="No images .* found in class subfolders"):
        load_dataset(tmp_path)


def test_missing_path_and_wrong_file_type(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DatasetError, match="neither a folder"):
        load_dataset(tmp_path / "data.json")


def test_balanced_subset_keeps_at_most_n_per_class() -> None:
    records = [(Path(f"{i}.png"), "a") for i in range(10)] + [(Path("z.png"), "b")]
    subset = balanced_subset(records, per_class=3, seed=1)
    assert [label for _, label in subset].count("a") == 3 and (Path("z.png"), "b") in subset
    assert subset == balanced_subset(records, per_class=3, seed=1)


def test_make_csv_labels_grocery_by_top_level_folder(tmp_path: Path) -> None:
    grocery = Path(Settings.from_env().datasets_dir) / "grocery" / "train"
    if not grocery.is_dir():
        pytest.skip(f"{grocery} is not available")
    out = tmp_path / "grocery_coarse.csv"
    done = subprocess.run([sys.executable, "scripts/make_csv.py", str(grocery), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert load_dataset(out).classes == ["Fruit", "Packages", "Vegetables"]


def test_make_csv_labels_grocery_packages_by_product_folder(tmp_path: Path) -> None:
    packages = Path(Settings.from_env().datasets_dir) / "grocery" / "train" / "Packages"
    if not packages.is_dir():
        pytest.skip(f"{packages} is not available")
    out = tmp_path / "packages.csv"
    done = subprocess.run([sys.executable, "scripts/make_csv.py", str(packages), str(out), "--labels", "leaf"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    classes = load_dataset(out).classes
    assert len(classes) == 31 and "Alpro-Fresh-Soy-Milk" in classes and "Juice" not in classes
