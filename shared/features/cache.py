"""The feature cache: SQLite, one value per (extractor config hash, image sha256), encoded by the extractor's codec."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from shared.config import Settings
from shared.features.registry import extractor_class

CACHE_FILE = "features.sqlite3"
_SQL_CHUNK = 500  # stays under SQLite's bound-parameter limit
# Two value columns: an extractor's codec gives bytes (stored as a BLOB) or str (stored as TEXT).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    config_hash TEXT NOT NULL,
    image_hash  TEXT NOT NULL,
    vector      BLOB,
    text        TEXT,
    PRIMARY KEY (config_hash, image_hash)
) WITHOUT ROWID
"""


def config_hash(config: dict) -> str:
    """sha256 of an extractor config's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Feature values by (config hash, image sha256); WAL, one short connection per call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @classmethod
    def default(cls, settings: Settings) -> "FeatureCache":
        """The cache at settings.cache_dir/features.sqlite3."""
        return cls(Path(settings.cache_dir) / CACHE_FILE)

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per call is safe across threads and processes; WAL lets readers run during a write.
        db = sqlite3.connect(self.path, timeout=30.0)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def get_many(self, config: dict, image_hashes: Iterable[str]) -> dict[str, Any]:
        """{image_hash: value} for the hashes present, decoded by the extractor of config["kind"]."""
        key, wanted, found = config_hash(config), list(dict.fromkeys(image_hashes)), {}
        decode = extractor_class(config["kind"]).decode
        with self._connect() as db:
            for start in range(0, len(wanted), _SQL_CHUNK):
                chunk = wanted[start:start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT image_hash, vector, text FROM features WHERE config_hash=? "
                                  f"AND image_hash IN ({marks})", [key, *chunk])
                found.update((h, decode(text if vector is None else vector)) for h, vector, text in rows)
        return found

    def put_many(self, config: dict, values: dict[str, Any]) -> None:
        """Store {image_hash: value} under config, encoded by the extractor of config["kind"]."""
        key, encode = config_hash(config), extractor_class(config["kind"]).encode
        rows = [(key, h, *_columns(encode(value))) for h, value in values.items()]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)

    def count(self) -> int:
        """Number of stored features (all configs)."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]


def _columns(stored: bytes | str) -> tuple[bytes | None, str | None]:
    """(vector, text) columns of an encoded value."""
    return (stored, None) if isinstance(stored, bytes) else (None, stored)


class VectorCodec:
    """The cache codec of extractors whose value per image is a float32 vector: stored as its bytes."""

    @staticmethod
    def encode(value: np.ndarray) -> bytes:
        """A vector as the feature cache stores it: float32 bytes."""
        return np.asarray(value, dtype=np.float32).tobytes()

    @staticmethod
    def decode(stored: bytes) -> np.ndarray:
        """The inverse of encode."""
        return np.frombuffer(stored, dtype=np.float32)
