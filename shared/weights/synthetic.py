"""Synthetic weights: the real architectures, randomly initialised, in the real file formats; marked."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from shared.artifacts import sha256_file as file_sha256
from shared.config import Settings
from shared.errors import WeightsMissing
from shared.weights.catalog import (
    DETECTOR,
    SYNTHETIC_TAG,
    TINY_CLIP_MODEL,
    clip_section,
    detector_entry,
    pick_recogniser,
    register_clip_configs,
)
from shared.weights.provenance import info_from_parts, part_owners
from shared.weights.store import (
    CLIP_DIR,
    DEFAULT_OCR_LANGS,
    OCR_DIR,
    atomic_torch_save,
    refuse_to_replace_real,
    weight_parts,
    write_info,
)

log = logging.getLogger(__name__)


SYNTHETIC_SEED = 0


def write_synthetic_weights(out: Path, settings: Settings, tiny: bool = False) -> Path:
    """Write the real architectures, randomly initialised, in the real file formats; marked synthetic."""

    out = Path(out)
    refuse_to_replace_real(out)
    out.mkdir(parents=True, exist_ok=True)
    log.warning("Writing SYNTHETIC weights (random init, NOT pretrained) to %s", out)
    kinds = weight_parts()
    write_info(out, info_from_parts(write_synthetic_parts(out, settings, kinds, tiny)))
    log.warning("SYNTHETIC weights ready in %s: predictions made with them are not %s", out, part_owners(kinds))
    return out


def write_synthetic_parts(out: Path, settings: Settings, kinds: Sequence[str], tiny: bool = False) -> dict:
    """{kind: weights.json section} for synthetic weights of just these parts ("clip", "ocr"), one seed for all."""
    import torch

    from shared.features.registry import extractor_class  # each extractor writes its own part

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SYNTHETIC_SEED)
        return {kind: extractor_class(kind).write_synthetic(out, settings, tiny) for kind in kinds}


def write_synthetic_clip(out: Path, settings: Settings, tiny: bool = False) -> dict:
    """CLIP (tiny: the test-size model) randomly initialised into out/clip; returns its weights.json section."""
    import open_clip

    model_name = TINY_CLIP_MODEL if tiny else settings.clip_model
    register_clip_configs()
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise WeightsMissing(f"Unknown CLIP model {model_name!r}; known: {', '.join(open_clip.list_models())}")
    log.warning("SYNTHETIC CLIP %s: random init", model_name)
    model = open_clip.create_model(model_name, pretrained=None)
    # Half precision on disk, as OpenAI ships CLIP; loading casts to the model's precision.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    relpath = f"{CLIP_DIR}/{model_name}-{SYNTHETIC_TAG}.bin"
    atomic_torch_save(state, out / relpath)
    info = clip_section(model_name, SYNTHETIC_TAG, relpath, out, settings, synthetic=True)
    if tiny:
        # The config travels with the weights, so a folder loads even where shared/model_configs differs.
        info["config"] = model_cfg
        (out / CLIP_DIR / f"{model_name}.json").write_text(json.dumps(model_cfg, indent=2), encoding="utf-8")
    return info


def write_synthetic_ocr(out: Path, settings: Settings) -> dict:
    """EasyOCR's CRAFT and the recogniser for OCR_LANGS, randomly initialised, into out/easyocr; its section."""
    from easyocr.craft import CRAFT

    folder = out / OCR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    langs = settings.ocr_lang_list() or list(DEFAULT_OCR_LANGS)
    choice = pick_recogniser(langs, folder)
    log.warning("SYNTHETIC EasyOCR: CRAFT detector + %s recogniser, random init", choice["name"])
    detector_file = detector_entry()["filename"]
    # EasyOCR's released files were saved from DataParallel: every key starts with "module.".
    atomic_torch_save(_module_prefixed(CRAFT(pretrained=False)), folder / detector_file)
    atomic_torch_save(_module_prefixed(_build_recogniser(choice, langs, folder)), folder / choice["filename"])
    files = {name: file_sha256(folder / name) for name in (detector_file, choice["filename"])}
    return {"langs": langs, "detector": DETECTOR, "recognizer": choice["name"], "files": files, "synthetic": True}


def _module_prefixed(model: Any) -> dict:
    return {f"module.{key}": value for key, value in model.state_dict().items()}


def _build_recogniser(choice: dict, langs: list[str], folder: Path) -> Any:
    import importlib

    from easyocr.utils import CTCLabelConverter

    # The same constructor arguments easyocr.Reader uses for its built-in generations.
    module = "easyocr.model.vgg_model" if choice["generation"] == "gen2" else "easyocr.model.model"
    channels = 256 if choice["generation"] == "gen2" else 512
    converter = CTCLabelConverter(choice["characters"], {}, {})
    model_cls = importlib.import_module(module).Model
    return model_cls(num_class=len(converter.character), input_channel=1,
                     output_channel=channels, hidden_size=channels)
