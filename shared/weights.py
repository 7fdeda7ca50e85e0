"""The weights folder: real downloads (checksummed), synthetic random-init weights (marked), and their checks."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from shared.artifacts import sha256_file as file_sha256
from shared.config import Settings
from shared.errors import ClassifierError, WeightsDownloadFailed, WeightsMissing

log = logging.getLogger(__name__)

INFO_FILE = "weights.json"
CLIP_DIR, OCR_DIR = "clip", "easyocr"
SYNTHETIC_TAG = "synthetic"
TINY_CLIP_MODEL = "ViT-Tiny-Synthetic"
MODEL_CONFIGS_DIR = Path(__file__).parent / "model_configs"
DETECTOR = "craft"
PARTS = ("clip", "ocr")
# What synthetic and downloaded OCR weights serve when OCR_LANGS is empty: the marketplace's Russian and English.
DEFAULT_OCR_LANGS = ("ru", "en")
FETCH_HINT = "Run `python -m shared weights` to download them, or offline `python -m shared weights --synthetic`."
# The preprocessing keys a pretrained tag may override; kept with the weights so loading never guesses.
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")
SYNTHETIC_SEED = 0


# --- reading and checking -------------------------------------------------------------------------
def read_weights_info(weights_dir: Path) -> dict:
    """weights.json of a weights folder; WeightsMissing if absent or unreadable."""
    path = Path(weights_dir) / INFO_FILE
    if not path.is_file():
        raise WeightsMissing(f"No weights in {weights_dir} ({INFO_FILE} not found). {FETCH_HINT}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsMissing(f"{path} could not be read ({exc}). {FETCH_HINT}") from None


def read_section(weights_dir: Path, kind: str) -> dict:
    """The weights.json section for kind ("clip" or "ocr"), files unchecked; WeightsMissing if absent."""
    info = read_weights_info(weights_dir).get(kind)
    if not info:
        raise WeightsMissing(f"{weights_dir}/{INFO_FILE} has no {kind!r} weights. {FETCH_HINT}")
    return info


def require_weights(weights_dir: Path, kind: str) -> dict:
    """The weights.json section for kind ("clip" or "ocr"), after checking every file's sha256."""
    info = read_section(weights_dir, kind)
    for relpath, expected in weight_files(info, kind).items():
        _verify_file(Path(weights_dir) / relpath, expected)
    return info


def weight_files(info: dict, kind: str) -> dict[str, str]:
    """{path relative to the weights folder: sha256} for one section of weights.json."""
    # The section's layout is the extractor's own: its class lists the files (imported lazily, both ways round).
    from shared.features.registry import extractor_class

    return extractor_class(kind).weight_files(info)


def ocr_weights_sha256(info: dict) -> str:
    """One hash standing for all OCR files (detector + recogniser)."""
    lines = "\n".join(f"{name}:{sha}" for name, sha in sorted(info["files"].items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _verify_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise WeightsMissing(f"Weight file {path} is missing. {FETCH_HINT}")
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsMissing(
            f"Weight file {path} has sha256 {actual}, but weights.json expects {expected}: "
            f"it was changed or damaged. {FETCH_HINT}"
        )


# --- torch runtime (shared by the CLIP and OCR loaders) ------------------------------------------
def torch_device(settings: Settings) -> str:
    """'cuda' or 'cpu' from settings.device ('auto' picks CUDA when available)."""
    import torch

    if settings.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"DEVICE must be one of auto, cpu, cuda; got {settings.device!r}")
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device


def configure_torch(settings: Settings) -> None:
    """Apply settings.torch_threads (0 keeps torch's default)."""
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)


# --- synthetic weights ----------------------------------------------------------------------------
def write_synthetic_weights(out: Path, settings: Settings, tiny: bool = False) -> Path:
    """Write the real architectures, randomly initialised, in the real file formats; marked synthetic."""
    import torch

    out = Path(out)
    refuse_to_replace_real(out)
    out.mkdir(parents=True, exist_ok=True)
    log.warning("Writing SYNTHETIC weights (random init, NOT pretrained) to %s", out)
    _write_info(out, info_from_parts(write_synthetic_parts(out, settings, PARTS, tiny)))
    log.warning("SYNTHETIC weights ready in %s: predictions made with them are not CLIP's or EasyOCR's", out)
    return out


def write_synthetic_parts(out: Path, settings: Settings, kinds: Sequence[str], tiny: bool = False) -> dict:
    """{kind: weights.json section} for synthetic weights of just these parts ("clip", "ocr")."""
    import torch

    writers = {"clip": lambda: _write_synthetic_clip(out, settings, tiny), "ocr": lambda: _write_synthetic_ocr(out, settings)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SYNTHETIC_SEED)
        return {kind: writers[kind]() for kind in kinds}


def info_from_parts(parts: dict) -> dict:
    """weights.json from its sections: `synthetic` is true if any part is, `parts` says which part is which."""
    return {**parts, "synthetic": any(section["synthetic"] for section in parts.values()),
            "parts": {kind: part_kind(section) for kind, section in parts.items()}}


def part_kind(section: dict) -> str:
    """'synthetic' or 'real' for one weights.json section."""
    return "synthetic" if section.get("synthetic") else "real"


def describe_parts(info: dict) -> str:
    """'ocr real, clip SYNTHETIC': for logs and messages."""
    return ", ".join(f"{kind} {'SYNTHETIC' if info[kind].get('synthetic') else 'real'}"
                     for kind in PARTS if isinstance(info.get(kind), dict))


# Whose accuracy a synthetic part does not have.
PART_NAMES = {"clip": "CLIP", "ocr": "EasyOCR"}


def parts_of(configs: Mapping[str, Any]) -> dict[str, str]:
    """{kind: "real"|"synthetic"} of feature configs (a manifest's "features") or of weights.json's sections."""
    return {kind: part_kind(cfg) for kind, cfg in configs.items() if isinstance(cfg, dict) and "synthetic" in cfg}


def manifest_parts(manifest: Mapping[str, Any]) -> dict[str, str]:
    """{kind: "real"|"synthetic"} a trained manifest records (older manifests: from its feature configs)."""
    recorded = manifest.get("weights")
    return dict(recorded) if isinstance(recorded, dict) else parts_of(manifest.get("features") or {})


def combine_parts(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """One {kind: "real"|"synthetic"} from several (e.g. the members behind a stacked answer); synthetic wins."""
    combined: dict[str, str] = {}
    for each in parts:
        for kind, what in each.items():
            combined[kind] = "synthetic" if "synthetic" in (what, combined.get(kind)) else what
    return combined


def synthetic_parts(parts: Mapping[str, str]) -> list[str]:
    """The kinds marked synthetic in a {kind: "real"|"synthetic"} dict."""
    return [kind for kind, what in parts.items() if what == "synthetic"]


def parts_note(parts: Mapping[str, str]) -> str:
    """'weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)' (real parts first); '' without parts."""
    if not parts:
        return ""
    ordered = sorted(parts.items(), key=lambda part: part[1] == "synthetic")
    listed = ", ".join(f"{kind} {'SYNTHETIC' if what == 'synthetic' else 'real'}" for kind, what in ordered)
    fake = synthetic_parts(parts)
    if not fake:
        return f"weights: {listed}"
    owners = " or ".join(f"{PART_NAMES.get(kind, kind)}'s" for kind in fake)
    return f"weights: {listed} (random init: not {owners} accuracy)"


def refuse_to_replace_real(out: Path) -> None:
    if (out / INFO_FILE).is_file() and not any(s.get("synthetic") for s in _sections(read_weights_info(out))):
        raise ClassifierError(
            f"{out} holds real (downloaded) weights; synthetic ones would replace them. "
            f"Choose another folder with --out.", code="weights_exist",
        )


def _write_synthetic_clip(out: Path, settings: Settings, tiny: bool) -> dict:
    import open_clip
    import torch

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
    info = _clip_info(model_name, SYNTHETIC_TAG, relpath, out, settings, synthetic=True)
    if tiny:
        # The config travels with the weights, so a folder loads even where shared/model_configs differs.
        info["config"] = model_cfg
        (out / CLIP_DIR / f"{model_name}.json").write_text(json.dumps(model_cfg, indent=2), encoding="utf-8")
    return info


def _clip_info(model: str, pretrained: str, relpath: str, out: Path, settings: Settings, synthetic: bool) -> dict:
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


def _write_synthetic_ocr(out: Path, settings: Settings) -> dict:
    import torch
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


def _sections(info: dict) -> list[dict]:
    return [info[kind] for kind in PARTS if isinstance(info.get(kind), dict)]


def _module_prefixed(model: Any) -> dict:
    return {f"module.{key}": value for key, value in model.state_dict().items()}


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


# --- real weights ---------------------------------------------------------------------------------
def fetch_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> Path:
    """Download the real CLIP and EasyOCR weights, verify checksums, write weights.json (synthetic: false)."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        clip_info = fetch_clip_weights(out, settings, timeout_s)
        ocr_info = fetch_ocr_weights(out, settings, timeout_s)
    except BaseException:
        if created:
            _remove_empty_folders(out)
        raise
    _write_info(out, info_from_parts({"clip": clip_info, "ocr": ocr_info}))
    return out


def _remove_empty_folders(root: Path) -> None:
    """Undo the folders a failed download made; a folder holding any file stays."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if not any(root.iterdir()):
        root.rmdir()


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


def _mirrored(url: str, settings: Settings) -> str:
    if not settings.weights_mirror:
        return url
    return f"{settings.weights_mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}"


def fetch_clip_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> dict:
    """Download and verify the configured CLIP weights into out/clip; returns their weights.json section."""
    url, expected = clip_source(settings)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        raw = Path(tmp) / url.rsplit("/", 1)[-1]
        download(_mirrored(url, settings), raw, timeout_s)
        actual = file_sha256(raw)
        if not actual.startswith(expected):
            raise WeightsDownloadFailed(_checksum_message(url, "sha256", expected, actual))
        return store_clip_checkpoint(raw, out, settings)


def store_clip_checkpoint(path: Path, out: Path, settings: Settings) -> dict:
    """Keep a verified upstream CLIP checkpoint as a plain state_dict in out/clip; returns its section."""
    relpath = f"{CLIP_DIR}/{settings.clip_model}-{settings.clip_pretrained}.bin"
    atomic_torch_save(_clip_state_dict(path), out / relpath)
    return _clip_info(settings.clip_model, settings.clip_pretrained, relpath, out, settings, synthetic=False)


def _clip_state_dict(path: Path) -> dict:
    import torch

    # OpenAI ships a TorchScript archive; the weights folder keeps a plain state_dict for open_clip.
    try:
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)
    return state


def fetch_ocr_weights(out: Path, settings: Settings, timeout_s: float = 60.0) -> dict:
    """Download and verify EasyOCR's detector and recogniser into out/easyocr; returns their section."""
    folder = out / OCR_DIR
    folder.mkdir(parents=True, exist_ok=True)
    langs = settings.ocr_lang_list() or list(DEFAULT_OCR_LANGS)
    choice = pick_recogniser(langs, folder)
    files = {}
    for entry in (detector_entry(), choice):
        _fetch_easyocr_file(entry, folder, settings, timeout_s)
        files[entry["filename"]] = file_sha256(folder / entry["filename"])
    return {"langs": langs, "detector": DETECTOR, "recognizer": choice["name"], "files": files, "synthetic": False}


def _fetch_easyocr_file(entry: dict, folder: Path, settings: Settings, timeout_s: float) -> None:
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        archive = Path(tmp) / entry["url"].rsplit("/", 1)[-1]
        download(_mirrored(entry["url"], settings), archive, timeout_s)
        member = _unzip_member(archive, entry["filename"], Path(tmp))
        actual = hashlib.md5(member.read_bytes()).hexdigest()
        if actual != entry["md5sum"]:
            raise WeightsDownloadFailed(_checksum_message(entry["url"], "md5", entry["md5sum"], actual))
        os.replace(member, folder / entry["filename"])


def _unzip_member(archive: Path, name: str, into: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extract(name, into)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsDownloadFailed(
            f"{archive.name} is not the expected zip with {name} ({exc}); the download is damaged. "
            f"Retry, or offline use `python -m shared weights --synthetic`."
        ) from None
    return into / name


def _checksum_message(url: str, algo: str, expected: str, actual: str) -> str:
    return (f"Checksum mismatch for {url}: {algo} is {actual}, expected {expected}. The file was not kept. "
            f"Retry, or offline use `python -m shared weights --synthetic`.")


def download(url: str, dest: Path, timeout_s: float) -> Path:
    """Stream url into dest with a tqdm bar; WeightsDownloadFailed says why it could not."""
    from tqdm import tqdm

    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(dest, "wb") as fh:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise WeightsDownloadFailed(
            f"Could not download {url}: the server answered HTTP {exc.code} {exc.reason}. "
            f"Check WEIGHTS_MIRROR, or offline use `python -m shared weights --synthetic`."
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsDownloadFailed(
            f"Could not download {url}: host unreachable or request failed ({reason}). "
            f"Check the network or set WEIGHTS_MIRROR, or offline use `python -m shared weights --synthetic`."
        ) from None
    return dest


# --- writing --------------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file next to path, then rename: a reader never sees half a file."""
    import torch

    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_info(out: Path, info: dict) -> None:
    """Write weights.json atomically."""
    _write_info(out, info)


def _write_info(out: Path, info: dict) -> None:
    with _atomic_path(out / INFO_FILE) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are read by service users too
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = [
    "read_weights_info", "read_section", "require_weights", "write_synthetic_weights", "fetch_weights",
    "fetch_clip_weights", "fetch_ocr_weights", "file_sha256",
    "weight_files", "ocr_weights_sha256", "torch_device", "configure_torch", "register_clip_configs",
]
