"""keep_torch_out(): make `import torch` fail in the gateway process; called first by shared/gateway/app.py only."""
from __future__ import annotations

import sys
from typing import Any


class _TorchBlocker:
    """An import hook that refuses torch, so the gateway process behaves as in its torch-free image."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is kept out of the stacking gateway", name=name)
        return None


def keep_torch_out() -> None:
    """Make `import torch` fail in this process (call it first thing in the gateway's entry point)."""
    # skops imports every sklearn module while loading, and sklearn's array-API shim would import torch
    # wherever it is installed: seconds of start-up and hundreds of MB for nothing. Libraries treat the
    # ImportError as "torch not installed".
    if not any(isinstance(finder, _TorchBlocker) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchBlocker())
