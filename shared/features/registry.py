"""Named feature extractors: the `Extractor` protocol and a registry from kind ("clip", "ocr") to its class.

In the spirit of open_clip's model registry: a kind is a name in a table, and the table entry may be a lazy
`"module:Class"` string, so that importing this module (and the torch-free gateway) never imports a model library.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

from shared.config import Settings
from shared.errors import ArtifactError

if TYPE_CHECKING:
    from PIL import Image

# Not compared at load: a config's `synthetic` follows from its weights_sha256, which is compared.
UNCHECKED_KEYS = frozenset({"synthetic"})


class Extractor(Protocol):
    """A feature extractor: load once from a weights folder, then one value per image, many times."""

    kind: ClassVar[str]  # its registry name, also the "kind" of its config
    batchable: ClassVar[bool]  # whether concurrent requests gain from one forward pass (dynamic batching)
    config: dict  # what a model trained on its features records, and must be served with
    synthetic: bool

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
        """The config a loaded extractor would report (as recorded, when given), without loading a model."""

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "Extractor":
        """Verify the weights and load the model; with a recorded config, reproduce that config."""

    @staticmethod
    def weight_files(info: dict) -> dict[str, str]:
        """{path relative to the weights folder: sha256} for its section of weights.json."""

    @staticmethod
    def encode(value: Any) -> bytes | str:
        """One image's value as the feature cache stores it (bytes go to a BLOB, str to TEXT)."""

    @staticmethod
    def decode(stored: bytes | str) -> Any:
        """The inverse of encode."""

    @staticmethod
    def stack(values: Sequence[Any], config: dict) -> Any:
        """Many images' values as its learners' input (what `extract` returns for those images)."""

    @staticmethod
    def describe(config: dict) -> str:
        """A short name of the weights behind a config, for reports."""

    def extract(self, images: list["Image.Image"]) -> Any:
        """One value per image, in order, stacked as `stack` does."""


_REGISTRY: dict[str, str | type] = {
    "clip": "shared.features.clip:ClipEmbedder",
    "ocr": "shared.features.ocr:OcrReader",
}


def register_extractor(extractor: type | str, kind: str | None = None) -> type | str:
    """Add an extractor class (or a lazy "module:Class" string with its kind); usable as a class decorator."""
    kind = kind or getattr(extractor, "kind", None)
    if not kind:
        raise ValueError("register_extractor needs the extractor's kind (a class's `kind`, or kind=...)")
    if kind in _REGISTRY:
        raise ValueError(f"A feature extractor of kind {kind!r} is already registered")
    _REGISTRY[kind] = extractor
    return extractor


def unregister_extractor(kind: str) -> None:
    """Remove an extractor added at run time (tests)."""
    _REGISTRY.pop(kind, None)


def extractor_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_REGISTRY)


def extractor_class(kind: str) -> type[Extractor]:
    """The class registered under kind, imported on first use; an unknown kind names the known ones."""
    if kind not in _REGISTRY:
        raise ValueError(f"Unknown feature extractor kind {kind!r}; known kinds: {', '.join(_REGISTRY)}")
    target = _REGISTRY[kind]
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = _REGISTRY[kind] = getattr(importlib.import_module(module), name)
    return target


def expected_config(kind: str, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> dict:
    """kind's config for this weights folder, without loading a model; checked against recorded when given."""
    actual = extractor_class(kind).config_for(weights_dir, settings, recorded)
    if recorded is not None:
        check_feature_config(recorded, actual, weights_dir)
    return actual


def load_extractor(kind: str, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> Extractor:
    """kind's extractor loaded from the weights folder (imports torch); a recorded config is checked first."""
    expected_config(kind, weights_dir, settings, recorded)
    return extractor_class(kind).load(weights_dir, settings, recorded)


def check_feature_config(recorded: dict, actual: dict, weights_dir: Path) -> None:
    """Refuse to serve a model with other weights or another extractor than it was trained with."""
    for key in (key for key in recorded if key not in UNCHECKED_KEYS):
        if recorded[key] != actual.get(key):
            raise ArtifactError(
                f"The {recorded.get('kind')} weights in {weights_dir} do not match the trained model: "
                f"{key} is {actual.get(key)!r} there, the model was trained with {recorded[key]!r}. "
                "Use the weights it was trained with, or retrain."
            )
