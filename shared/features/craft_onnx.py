"""CRAFT text detector on ONNX Runtime: exported once per weights file (cached by its sha256), called like EasyOCR's."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPSET = 17
# Images reach CRAFT padded to multiples of 32 but otherwise of any size: batch, height and width stay dynamic.
_DYNAMIC_AXES = {"image": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 1: "half_height", 2: "half_width"}}


class OnnxCraft:
    """Drop-in for EasyOCR's CRAFT module: (n, 3, h, w) float tensor -> (score maps (n, h/2, w/2, 2), None)."""

    def __init__(self, session: Any, path: Path):
        self.session = session
        self.path = path

    def __call__(self, x: Any) -> tuple[Any, None]:
        import torch

        (scores,) = self.session.run(["y"], {"image": x.detach().cpu().numpy()})
        # easyocr.detection.test_net unpacks (y, feature) and never reads feature.
        return torch.from_numpy(scores), None

    def eval(self) -> "OnnxCraft":
        return self


def onnx_path(folder: Path, craft_sha256: str) -> Path:
    """Where the ONNX export of the CRAFT file with this sha256 is cached (next to the weights)."""
    return Path(folder) / f"craft.{craft_sha256[:16]}.onnx"


def load_detector(detector: Any, folder: Path, craft_sha256: str, threads: int) -> OnnxCraft:
    """The cached ONNX export of `detector` (exported now if missing) in an ONNX Runtime session."""
    path = cached_export(detector, folder, craft_sha256)
    return OnnxCraft(open_session(path, threads), path)


def cached_export(detector: Any, folder: Path, craft_sha256: str) -> Path:
    """The ONNX file for these CRAFT weights; exported next to them, or to a private temp folder if that is read-only."""
    path = onnx_path(folder, craft_sha256)
    if path.is_file():
        return path
    if not os.access(folder, os.W_OK):
        # e.g. /models mounted read-only: export for this process only (costs seconds at every start).
        path = Path(tempfile.mkdtemp(prefix="craft-onnx-")) / path.name
        log.warning("%s is read-only; exporting CRAFT to %s for this process only. Load OCR once where the "
                    "weights folder is writable (training does) to cache the export.", folder, path)
    return export_craft(detector, path)


def export_craft(detector: Any, path: Path) -> Path:
    """Export the CRAFT module's score maps to ONNX at path; written to a temp name and renamed, so readers never see half a file."""
    import torch

    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    log.info("exporting CRAFT to ONNX: %s", path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; its graph is what we test
        torch.onnx.export(_scores_only(detector), (torch.zeros(1, 3, 64, 96),), str(partial),
                          input_names=["image"], output_names=["y"], dynamic_axes=_DYNAMIC_AXES,
                          opset_version=OPSET, dynamo=False)
    os.replace(partial, path)
    return path


def open_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with `threads` intra-op threads (0 = one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Four services share the cores: idle pool threads sleep instead of spinning (as OMP_WAIT_POLICY=PASSIVE does for torch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _scores_only(detector: Any) -> Any:
    """CRAFT returns (scores, features); only the scores leave the exported graph."""
    import torch

    class ScoresOnly(torch.nn.Module):
        def __init__(self, craft: Any):
            super().__init__()
            self.craft = craft

        def forward(self, x: Any) -> Any:
            return self.craft(x)[0]

    return ScoresOnly(detector).eval()
