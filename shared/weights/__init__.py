"""The weights folder: real downloads and offline imports (checksummed), synthetic random-init weights (marked),
and which part is which. Private modules; the public names are re-exported here (`offline` is imported on its own)."""
from shared.artifacts import sha256_file as file_sha256  # noqa: F401
from shared.weights.catalog import (  # noqa: F401
    DETECTOR,
    MODEL_CONFIGS_DIR,
    PREPROCESS_KEYS,
    SYNTHETIC_TAG,
    TINY_CLIP_MODEL,
    clip_section,
    clip_source,
    detector_entry,
    pick_recogniser,
    recogniser_entry,
    recogniser_for,
    register_clip_configs,
)
from shared.weights.download import (  # noqa: F401
    download,
    fetch_clip_weights,
    fetch_ocr_weights,
    fetch_weights,
    store_clip_checkpoint,
)
from shared.weights.provenance import (  # noqa: F401
    combine_parts,
    describe_parts,
    info_from_parts,
    manifest_parts,
    part_kind,
    part_owners,
    parts_note,
    parts_of,
    synthetic_parts,
)
from shared.weights.store import (  # noqa: F401
    CLIP_DIR,
    DEFAULT_OCR_LANGS,
    FETCH_HINT,
    INFO_FILE,
    OCR_DIR,
    atomic_torch_save,
    ocr_weights_sha256,
    read_section,
    read_weights_info,
    refuse_to_replace_real,
    require_weights,
    weight_files,
    weight_parts,
    write_info,
)
from shared.weights.synthetic import (  # noqa: F401
    SYNTHETIC_SEED,
    write_synthetic_clip,
    write_synthetic_ocr,
    write_synthetic_parts,
    write_synthetic_weights,
)
from shared.weights.torch_runtime import configure_torch, torch_device  # noqa: F401
