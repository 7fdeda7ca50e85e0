"""Feature extractors (CLIP embeddings, OCR text) by name, the feature cache, and extraction over image files."""
from shared.features.cache import FeatureCache
from shared.features.extract import FeatureTable, extract_features
from shared.features.registry import (
    Extractor,
    ExtractorEntry,
    check_feature_config,
    expected_config,
    extractor_class,
    extractor_entry,
    extractor_kinds,
    load_extractor,
    part_label,
    part_labels,
    part_upstream,
    register_extractor,
    unregister_extractor,
)

__all__ = [
    "Extractor", "ExtractorEntry", "FeatureCache", "FeatureTable", "check_feature_config", "expected_config",
    "extract_features", "extractor_class", "extractor_entry", "extractor_kinds", "load_extractor", "part_label",
    "part_labels", "part_upstream", "register_extractor", "unregister_extractor",
]
