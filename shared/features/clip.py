"""CLIP image embeddings: open_clip model + its own preprocessing, L2-normalised, batched."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from shared import weights
from shared.config import Settings
from shared.features.cache import VectorCodec

log = logging.getLogger(__name__)


def clip_config(info: dict) -> dict:
    """The feature config of CLIP weights (what a trained model must be served with)."""
    return {
        "kind": "clip",
        "model": info["model"],
        "pretrained": info["pretrained"],
        "weights_sha256": info["sha256"],
        "synthetic": bool(info["synthetic"]),
        "dim": int(info["dim"]),
    }


class ClipEmbedder(VectorCodec):
    """Images -> (n, d) float32 unit vectors. Load once, embed many times."""

    kind = "clip"
    batchable = True  # one forward pass over a batch costs far less than one per image
    embedding_map = True  # the report draws the embeddings, PCA 2-D

    def __init__(self, image_tower: Any, preprocess: Any, device: str, info: dict, settings: Settings):
        self.image_tower = image_tower
        self.preprocess = preprocess
        self.device = device
        self.info = info
        self.settings = settings
        self.config = clip_config(info)
        self.synthetic = self.config["synthetic"]
        self.dim = self.config["dim"]

    @classmethod
    def config_for(cls, weights_dir: Path, settings: Settings | None = None, recorded: dict | None = None) -> dict:
        """The config a loaded embedder would report, read from weights.json without loading the model."""
        return clip_config(weights.read_section(weights_dir, cls.kind))

    @classmethod
    def load(cls, weights_dir: Path, settings: Settings, recorded: dict | None = None) -> "ClipEmbedder":
        """Verify the weights, build the model with open_clip's factory and its matching preprocessing.

        A recorded config changes nothing here: the weights alone decide CLIP's config.
        """
        import open_clip

        info = weights.require_weights(weights_dir, cls.kind)
        weights.configure_torch(settings)
        weights.register_clip_configs(Path(weights_dir), info["model"])
        device = weights.torch_device(settings)
        if info["synthetic"]:
            log.warning("CLIP %s uses SYNTHETIC (random) weights: embeddings carry no pretrained meaning", info["model"])
        model, _, preprocess = open_clip.create_model_and_transforms(
            info["model"],
            pretrained=str(Path(weights_dir) / info["file"]),
            precision="fp16" if device == "cuda" else "fp32",
            device=device,
            force_quick_gelu=info.get("quick_gelu", False),
            **{f"image_{key}": value for key, value in info.get("preprocess", {}).items()},
        )
        # Only images are embedded: keep the image tower (what encode_image runs) and let the text tower go,
        # about 250 MB of ViT-B-32's weights (63 M of 151 M parameters).
        return cls(model.visual.eval(), preprocess, device, info, settings)

    @staticmethod
    def weight_files(info: dict) -> dict[str, str]:
        """{path relative to the weights folder: sha256}: the one checkpoint."""
        return {info["file"]: info["sha256"]}

    @staticmethod
    def stack(values: Sequence[np.ndarray], config: dict) -> np.ndarray:
        """Many vectors as the learners' (n, dim) float32 matrix."""
        if not len(values):
            return np.zeros((0, config["dim"]), dtype=np.float32)
        return np.stack(list(values)).astype(np.float32, copy=False)

    @staticmethod
    def describe(config: dict) -> str:
        """'ViT-B-32 / openai'."""
        return f"{config.get('model')} / {config.get('pretrained')}"

    @staticmethod
    def feature_notes(values: Sequence[np.ndarray]) -> list[str]:
        """None: the embedding map shows CLIP's features."""
        return []

    @staticmethod
    def write_synthetic(out: Path, settings: Settings, tiny: bool = False) -> dict:
        """CLIP_MODEL (tiny: the test-size model) randomly initialised; its weights.json section."""
        return weights.write_synthetic_clip(out, settings, tiny)

    @staticmethod
    def fetch_weights(out: Path, settings: Settings, timeout_s: float) -> dict:
        """open_clip's checkpoint for CLIP_MODEL/CLIP_PRETRAINED, verified; its section."""
        return weights.fetch_clip_weights(out, settings, timeout_s)

    @staticmethod
    def find_weights(found: dict[str, Path], settings: Settings) -> Path | None:
        """The checkpoint open_clip downloads for CLIP_MODEL/CLIP_PRETRAINED among found, verified."""
        from shared.weights import offline

        return offline.find_clip_checkpoint(found, settings)

    @staticmethod
    def store_weights(part: Path, out: Path, settings: Settings) -> dict:
        """The checkpoint kept as a plain state_dict in out/clip; its section."""
        return weights.store_clip_checkpoint(part, out, settings)

    @staticmethod
    def wanted_files(settings: Settings) -> str:
        """'the CLIP checkpoint for ViT-B-32/openai'."""
        from shared.weights import offline

        return offline.wanted_clip_checkpoint(settings)

    def extract(self, images: list[Image.Image]) -> np.ndarray:
        """(n, dim) float32 unit vectors, in batches of settings.clip_batch_size."""
        return self.embed(images)

    def embed(self, images: Sequence[Image.Image], batch_size: int | None = None, progress: bool = False) -> np.ndarray:
        """(n, dim) float32, each row L2-normalised; batches of batch_size (default settings.clip_batch_size)."""
        size = batch_size or self.settings.clip_batch_size
        starts = range(0, len(images), size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="CLIP", unit="batch")
        parts = [self._embed_batch(images[i:i + size]) for i in starts]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        dtype = next(self.image_tower.parameters()).dtype
        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images])
        with torch.inference_mode():
            features = self.image_tower(batch.to(self.device, dtype=dtype)).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy().astype(np.float32, copy=False)
