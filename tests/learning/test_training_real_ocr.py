"""A model trained with the real EasyOCR tells packages apart by their printed text (CLIP here is synthetic),
through the CLI as a user runs it: grocery's <category>/<product>/<photo> folders, `--labels leaf`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from shared import repository
from shared.config import Settings

from tests.test_cli import run_cli

GROCERY = Settings.from_env().datasets_dir / "grocery" / "train" / "Packages"
# Four products whose brand or variety is printed large: the text tells them apart, the (synthetic) CLIP cannot.
PRODUCTS = ("Alpro-Vanilla-Soyghurt", "God-Morgon-Orange-Juice", "Arla-Mild-Vanilla-Yoghurt", "Tropicana-Apple-Juice")
PER_PRODUCT = 12  # real OCR reads about a photo a second here: 64 photos in all keep this test near a minute
KEPT_BACK = 4  # the next photos of each product, never trained on: scored by `evaluate`


def copy_products(dest: Path, photos: slice) -> Path:
    """dest/<category>/<product>/<photo>: real grocery files, laid out as the dataset ships them."""
    for product in PRODUCTS:
        for photo in sorted(GROCERY.glob(f"*/{product}/*.jpg"))[photos]:
            target = dest / photo.relative_to(GROCERY)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, target)
    return dest


def test_real_ocr_tells_packages_apart_by_text(tiny_weights: Path, tmp_path: Path) -> None:
    train_dir = copy_products(tmp_path / "train", slice(0, PER_PRODUCT))
    kept_back = copy_products(tmp_path / "kept_back", slice(PER_PRODUCT, PER_PRODUCT + KEPT_BACK))
    models = tmp_path / "models"
    env = {"FEATURE_CACHE_DIR": str(tmp_path / "cache"), "TORCH_THREADS": "1"}
    done = run_cli("train", "--data", str(train_dir), "--labels", "leaf", "--out", str(models),
                   "--weights", str(tiny_weights), "--test-size", "0.4", "--folds", "3", env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Trained 4 classes" in done.stdout and "ocr real, clip SYNTHETIC" in done.stdout

    folder = repository.active_dir(models)  # the first version trained into a new repository is active
    assert folder.parent == models / "versions" and f"(version {folder.name})" in done.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["classes"] == sorted(PRODUCTS) and manifest["training"]["train"]["labels"] == "leaf"
    assert manifest["weights"] == {"clip": "synthetic", "ocr": "real"}
    metrics = manifest["metrics"]
    # 20 held-out photos of 4 products: chance is 0.25. Measured 0.9+; the bound leaves room for OCR jitter.
    assert metrics["ocr_nb"]["accuracy"] >= 0.7, metrics
    assert metrics["ocr_nb"]["macro_f1"] > metrics["clip_logreg"]["macro_f1"] + 0.2, metrics
    report = (folder / "report" / "report.md").read_text()
    assert "SYNTHETIC" in report and "real" in report

    # evaluate names the kept-back folder's classes as training did (leaf), without being told.
    done = run_cli("evaluate", "--models", str(models), "--weights", str(tiny_weights), "--data", str(kept_back),
                   env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["ocr_nb"]["accuracy"] >= 0.6, summary  # 16 unseen photos; chance 0.25
    assert "ocr real, clip SYNTHETIC" in done.stderr
