"""What upstream publishes: open_clip's and EasyOCR's model registries, file names and checksums."""
from __future__ import annotations

import tempfile
from pathlib import Path

from shared.artifacts import sha256_file as file_sha256
from shared.config import Settings
from shared.errors import WeightsDownloadFailed, WeightsMissing
from shared.weights.store import CLIP_DIR

SYNTHETIC_TAG = "synthetic"


TINY_CLIP_MODEL = "ViT-Tiny-Synthetic"


MODEL_CONFIGS_DIR = Path(__file__).parent.parent / "model_configs"


DETECTOR = "craft"


# The preprocessing keys a pretrained tag may override; kept with the weights so loading never guesses.
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def clip_section(model: str, pretrained: str, relpath: str, out: Path, settings: Settings, synthetic: bool) -> dict:
    import open_clip

    # Synthetic weights mimic the configured tag's architecture details (quick_gelu, preprocessing).
    tag_cfg = open_clip.get_pretrained_cfg(model, settings.clip_pretrained) or {}
    return {
        "model": model,
        "pretrained": pretrained,
        "file": relpath,
        "sha256": file_sha256(out / relpath),
        "synthetic": synthetic,
        "dim": open_clip.get_model_config(model)["embed_dim"],
        "quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
        "preprocess": {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg},
    }


def register_clip_configs(weights_dir: Path | None = None, model: str | None = None) -> None:
    """Add our custom model configs (shared/model_configs, or one kept in a weights folder) to open_clip."""
    import open_clip

    if TINY_CLIP_MODEL not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS_DIR)
    kept = Path(weights_dir or ".") / CLIP_DIR / f"{model}.json"
    if weights_dir is not None and model not in open_clip.list_models() and kept.is_file():
        open_clip.add_model_config(kept)


def detector_entry() -> dict:
    from easyocr.config import detection_models

    return detection_models[DETECTOR]


def pick_recogniser(langs: list[str], folder: Path) -> dict:
    """The recogniser EasyOCR itself picks for langs: {name, generation, filename, url, md5sum, characters}."""
    import easyocr
    from easyocr.config import recognition_models

    # A Reader without detector/recogniser runs EasyOCR's own language -> model choice and loads nothing.
    probe = easyocr.Reader(langs, gpu=False, model_storage_directory=str(folder),
                           user_network_directory=str(folder), download_enabled=False,
                           detector=False, recognizer=False, verbose=False)
    for generation in ("gen2", "gen1"):
        for name, entry in recognition_models[generation].items():
            if entry["model_script"] == probe.model_lang and entry["characters"] == probe.character:
                return {"name": name, "generation": generation, **entry}
    raise WeightsMissing(f"EasyOCR has no recogniser for languages {langs}")


def recogniser_entry(name: str) -> dict:
    """EasyOCR's gen2 recogniser entry by name: {name, generation, filename, md5sum, ...}."""
    from easyocr.config import recognition_models

    return {"name": name, "generation": "gen2", **recognition_models["gen2"][name]}


def recogniser_for(langs: list[str]) -> dict:
    """The recogniser EasyOCR picks for these languages (no files needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        return pick_recogniser(langs, Path(tmp))


def clip_source(settings: Settings) -> tuple[str, str]:
    """(url, expected sha256 prefix) of the configured CLIP weights, from open_clip's registry."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    url = (cfg or {}).get("url", "")
    if not url:
        raise WeightsDownloadFailed(
            f"open_clip has no direct download URL for {settings.clip_model}/{settings.clip_pretrained}; "
            f"choose a tag with one (e.g. CLIP_PRETRAINED=openai) or offline use `python -m shared weights --synthetic`."
        )
    # open_clip's own convention: the sha256 is a path segment (OpenAI) or a filename suffix (mlfoundations).
    if "openaipublic" in url:
        return url, url.split("/")[-2]
    return url, Path(url).stem.split("-")[-1]
