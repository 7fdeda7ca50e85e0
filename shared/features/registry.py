"""Named feature extractors: the `Extractor` protocol and a registry from kind ("clip", "ocr") to its class.

In the spirit of open_clip's model registry: a kind is a name in a table, and the table entry may be a lazy
`"module:Class"` string, so that importing this module (and the torch-free gateway) never imports a model library.
An entry also carries the names reports and pages give the kind's weights part, readable without that import.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
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
    # `label` and `upstream` (see ExtractorEntry) are read from the class too when it is registered directly.
    batchable: ClassVar[bool]  # whether concurrent requests gain from one forward pass (dynamic batching)
    embedding_map: ClassVar[bool]  # whether its values are vectors the report draws as a 2-D map
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

    @staticmethod
    def feature_notes(values: Sequence[Any]) -> list[str]:
        """What the training report should say about these features (each item: one split's stacked values)."""

    # --- its part of the weights folder (weights.json[kind]); the weights commands call these ---
    @staticmethod
    def write_synthetic(out: Path, settings: Settings, tiny: bool = False) -> dict:
        """Write randomly initialised weights into out (torch's RNG already seeded); returns its section."""

    @staticmethod
    def fetch_weights(out: Path, settings: Settings, timeout_s: float) -> dict:
        """Download and verify the real weights into out; returns its section."""

    @staticmethod
    def find_weights(found: dict[str, Path], settings: Settings) -> Any | None:
        """Its real files among `weights --from`'s {file name: path}, verified; None if not all there."""

    @staticmethod
    def store_weights(part: Any, out: Path, settings: Settings) -> dict:
        """Copy what find_weights found into out; returns its section (marked real)."""

    @staticmethod
    def wanted_files(settings: Settings) -> str:
        """What `weights --from` looks for, in words: 'the CLIP checkpoint for ViT-B-32/openai'."""


@dataclass(frozen=True)
class ExtractorEntry:
    """A kind's row in the registry: what reports and pages need without importing the class (and torch)."""

    kind: str
    target: str | type  # the class, or "module:Class" imported on first use
    label: str  # its weights part as reports and pages name it: "CLIP", "OCR"
    upstream: str  # whose pretrained weights the real part is: "CLIP", "EasyOCR"


_REGISTRY: dict[str, ExtractorEntry] = {
    "clip": ExtractorEntry("clip", "shared.features.clip:ClipEmbedder", label="CLIP", upstream="CLIP"),
    "ocr": ExtractorEntry("ocr", "shared.features.ocr:OcrReader", label="OCR", upstream="EasyOCR"),
}


def register_extractor(extractor: type | str, kind: str | None = None, label: str | None = None,
                       upstream: str | None = None) -> type | str:
    """Add an extractor class (or a lazy "module:Class" string with its kind and label); usable as a decorator."""
    kind = kind or getattr(extractor, "kind", None)
    if not kind:
        raise ValueError("register_extractor needs the extractor's kind (a class's `kind`, or kind=...)")
    if kind in _REGISTRY:
        raise ValueError(f"A feature extractor of kind {kind!r} is already registered")
    label = label or getattr(extractor, "label", None) or kind
    upstream = upstream or getattr(extractor, "upstream", None) or label
    _REGISTRY[kind] = ExtractorEntry(kind, extractor, label, upstream)
    return extractor


def unregister_extractor(kind: str) -> None:
    """Remove an extractor added at run time (tests)."""
    _REGISTRY.pop(kind, None)


def extractor_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_REGISTRY)


def extractor_entry(kind: str) -> ExtractorEntry:
    """kind's registry row (nothing imported); an unknown kind names the known ones."""
    if kind not in _REGISTRY:
        raise ValueError(f"Unknown feature extractor kind {kind!r}; known kinds: {', '.join(_REGISTRY)}")
    return _REGISTRY[kind]


def part_label(kind: str) -> str:
    """How reports and pages name kind's weights part ("CLIP"); an unregistered kind stays as it is."""
    return _REGISTRY[kind].label if kind in _REGISTRY else kind


def part_labels() -> dict[str, str]:
    """{kind: label} of every registered kind, e.g. {"clip": "CLIP", "ocr": "OCR"} (the page hands it to its JS)."""
    return {kind: entry.label for kind, entry in _REGISTRY.items()}


def part_upstream(kind: str) -> str:
    """Whose accuracy a synthetic part of kind lacks ("EasyOCR"); an unregistered kind stays as it is."""
    return _REGISTRY[kind].upstream if kind in _REGISTRY else kind


def extractor_class(kind: str) -> type[Extractor]:
    """The class registered under kind, imported on first use; an unknown kind names the known ones."""
    entry = extractor_entry(kind)
    if isinstance(entry.target, str):
        module, _, name = entry.target.partition(":")
        entry = _REGISTRY[kind] = dataclasses.replace(entry, target=getattr(importlib.import_module(module), name))
    return entry.target


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
