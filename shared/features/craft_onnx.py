"""CRAFT text detector on ONNX Runtime: exported once per weights file (cached by its sha256), called like EasyOCR's.

Two detectors: the fp32 export, and its static int8 quantisation (QDQ, per-channel weights) calibrated on the rendered
scenes of craft_calibration, with the first convolution and the score-map head left in fp32. Both are cached next to
the weights, named by the CRAFT file's sha256 (and the int8 recipe).
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

OPSET = 17
DETECTORS = ("fp32", "int8")
# Images reach CRAFT padded to multiples of 32 but otherwise of any size: batch, height and width stay dynamic.
_DYNAMIC_AXES = {"image": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 1: "half_height", 2: "half_width"}}
# Recipe 1 quantised every convolution; recipe 2 keeps in fp32 the convolution that sees the raw pixels and the head
# whose score maps are thresholded into boxes: its words stay closer to fp32's for ~5% more CPU (ACCURACY.md).
INT8_RECIPE = 2
INT8_KEEP_FP32 = ("/craft/basenet/slice1/slice1.0/Conv",
                  *(f"/craft/conv_cls/conv_cls.{i}/Conv" for i in (0, 2, 4, 6, 8)))


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


def onnx_path(folder: Path, craft_sha256: str, precision: str = "fp32") -> Path:
    """Where the ONNX detector of the CRAFT file with this sha256 is cached (next to the weights)."""
    suffix = "" if precision == "fp32" else f".{precision}r{INT8_RECIPE}"
    return Path(folder) / f"craft.{craft_sha256[:16]}{suffix}.onnx"


def load_detector(detector: Any, folder: Path, craft_sha256: str, threads: int, precision: str = "fp32") -> OnnxCraft:
    """The cached ONNX detector of `detector` (made now if missing) in an ONNX Runtime session."""
    if precision not in DETECTORS:
        raise ValueError(f"OCR_DETECTOR must be one of {', '.join(DETECTORS)}; got {precision!r}")
    if precision == "int8":
        path = cached_int8(detector, folder, craft_sha256)
    else:
        path = cached_export(detector, folder, craft_sha256)
    return OnnxCraft(open_session(path, threads), path)


def cached_export(detector: Any, folder: Path, craft_sha256: str) -> Path:
    """The ONNX file for these CRAFT weights; exported next to them, or to a private temp folder if that is read-only."""
    path = _writable(onnx_path(folder, craft_sha256))
    return path if path.is_file() else export_craft(detector, path)


def cached_int8(detector: Any, folder: Path, craft_sha256: str) -> Path:
    """The static int8 detector for these CRAFT weights; quantised from the fp32 export (made if need be) when missing."""
    path = _writable(onnx_path(folder, craft_sha256, "int8"))
    return path if path.is_file() else quantize_int8(cached_export(detector, folder, craft_sha256), path)


def _writable(path: Path) -> Path:
    """path, or the same name in a private temp folder when its folder is read-only."""
    if path.is_file() or os.access(path.parent, os.W_OK):
        return path
    # e.g. /models mounted read-only: build for this process only (seconds to a minute at every start).
    private = Path(tempfile.mkdtemp(prefix="craft-onnx-")) / path.name
    log.warning("%s is read-only; building %s for this process only. Load OCR once where the weights folder is "
                "writable (training does) to cache it.", path.parent, private)
    return private


def quantize_int8(fp32: Path, path: Path, images: Iterable[Any] | None = None,
                  keep_fp32: Sequence[str] = INT8_KEEP_FP32) -> Path:
    """Static int8 QDQ quantisation of the fp32 export, activations MinMax-calibrated on images (the rendered scenes).

    keep_fp32 names the nodes left unquantised (the shipped recipe's by default; () quantises all, recipe 1).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from shared.features import craft_calibration

    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    log.info("quantising CRAFT to static int8: %s", path)
    inputs = ({"image": craft_input(image)} for image in (craft_calibration.scenes() if images is None else images))
    # MinMax calibration keeps only each tensor's min and max per scene (ReduceMin/Max in the graph): little memory.
    quantize_static(str(fp32), str(partial), _Calibration(inputs), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(keep_fp32))
    os.replace(partial, path)
    return path


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over an iterator of model inputs."""

    def __init__(self, inputs: Any):
        self.inputs = iter(inputs)

    def get_next(self) -> dict | None:
        return next(self.inputs, None)


def craft_input(image: Any) -> Any:
    """What EasyOCR feeds CRAFT for an RGB image: resized to a multiple of 32, normalised, NCHW float32."""
    import cv2
    import numpy as np
    from easyocr.imgproc import normalizeMeanVariance, resize_aspect_ratio

    resized, _, _ = resize_aspect_ratio(np.asarray(image), 2560, interpolation=cv2.INTER_LINEAR, mag_ratio=1.0)
    return np.transpose(normalizeMeanVariance(resized), (2, 0, 1))[None].astype(np.float32)


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
