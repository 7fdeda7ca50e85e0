"""The torch device and threads, shared by the CLIP and OCR loaders."""
from __future__ import annotations

from shared.config import Settings


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
