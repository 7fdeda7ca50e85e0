"""Weights and a trained model for bench/resilience.py: full-size offline weights (REAL OCR, SYNTHETIC CLIP, shared
with bench/run.py's .cache/bench/weights) and a small models folder trained on the screenshots dataset."""
from __future__ import annotations

import logging
from pathlib import Path

from bench.run import WORK, full_size_weights
from shared.config import Settings

PER_CLASS = 15  # screenshots: 2 classes (camera, screenshots) -> 30 images, about a minute on 2 cores
MODELS = WORK / "resilience" / "models"


def prepare(settings: Settings) -> tuple[Path, Path]:
    """(weights_dir, models_dir): written once, reused by later runs."""
    from shared.learning.data import balanced_subset, folder_records, write_csv
    from shared.learning.training import train

    weights_dir = full_size_weights(settings, WORK / "weights")
    if not (MODELS / "manifest.json").exists():
        root = MODELS.parent
        root.mkdir(parents=True, exist_ok=True)
        records = balanced_subset(folder_records(Path(settings.datasets_dir) / "screenshots"), per_class=PER_CLASS,
                                  seed=0)
        csv = write_csv(records, root / "screenshots.csv")
        logging.getLogger("bench.resilience").info("training on %d screenshots images", len(records))
        train(csv, MODELS, weights_dir, settings.replace(cache_dir=root / "cache"), folds=3, seed=0)
    return weights_dir, MODELS


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(prepare(Settings.from_env()))
