"""A model trained with the real EasyOCR tells packages apart by their printed text (CLIP here is synthetic)."""
from __future__ import annotations

from pathlib import Path

from shared.config import Settings
from shared.learning.data import write_csv
from shared.learning.training import train

GROCERY = Settings.from_env().datasets_dir / "grocery" / "train" / "Packages"
# Four products whose brand or variety is printed large: the text tells them apart, the (synthetic) CLIP cannot.
PRODUCTS = ("Alpro-Vanilla-Soyghurt", "God-Morgon-Orange-Juice", "Arla-Mild-Vanilla-Yoghurt", "Tropicana-Apple-Juice")
PER_PRODUCT = 20


def test_real_ocr_tells_packages_apart_by_text(tiny_weights: Path, tmp_path: Path) -> None:
    records = [(photo, product) for product in PRODUCTS
               for photo in sorted(GROCERY.glob(f"*/{product}/*.jpg"))[:PER_PRODUCT]]
    data = write_csv(records, tmp_path / "packages.csv")
    settings = Settings.from_env().replace(torch_threads=1, cache_dir=tmp_path / "cache")
    manifest = train(data, tmp_path / "models", tiny_weights, settings, test_size=0.4, folds=3, seed=0)
    metrics = manifest["metrics"]
    assert manifest["features"]["ocr"]["synthetic"] is False and manifest["features"]["clip"]["synthetic"] is True
    # 32 held-out photos of 4 products: chance is 0.25. Measured 0.9+; the bound leaves room for OCR jitter.
    assert metrics["ocr_nb"]["accuracy"] >= 0.7, metrics
    assert metrics["ocr_nb"]["macro_f1"] > metrics["clip_logreg"]["macro_f1"] + 0.2, metrics
    report = (tmp_path / "models" / "report" / "report.md").read_text()
    assert "SYNTHETIC" in report and "real" in report
