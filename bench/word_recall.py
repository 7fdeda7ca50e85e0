"""OCR word recall: the share of photos where a word of the product's name (from its folder name) was read."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

MIN_WORD = 3  # shorter name parts ("of", "a") are read everywhere and say nothing about the product


def name_words(folder: str) -> set[str]:
    """'God-Morgon-Orange-Red-Grapefruit-Juice' -> {'god', 'morgon', 'orange', 'red', 'grapefruit', 'juice'}."""
    return {word for word in re.split(r"[^0-9a-z]+", folder.lower()) if len(word) >= MIN_WORD}


def read_words(texts: Iterable[str]) -> set[str]:
    """The normalised words OCR read (detections' texts or one joined text)."""
    return {word for text in texts for word in text.split()}


def hit(path: Path | str, texts: Iterable[str]) -> bool:
    """Whether a word of the photo's product name (its parent folder) was read, exactly after normalisation."""
    return bool(name_words(Path(path).parent.name) & read_words(texts))


def recall(paths: Sequence[Path | str], texts: Sequence[Iterable[str]]) -> float:
    """Share of photos with a hit."""
    return sum(hit(p, t) for p, t in zip(paths, texts)) / max(1, len(paths))
