"""The OCR path (OcrReader in-process): read, decode, the side cap, detector runtimes, the recogniser."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import num, table


def ocr_section(r: dict) -> str:
    """OcrReader timings: the 348 px and 12 MP photos, side caps, detectors, the recogniser."""
    o = r.get("ocr")
    if not o:
        return ""
    rec = o["recognizer"]
    detect = f", CRAFT's input enlarged to {o['ocr_detect_side']} px" if o.get("ocr_detect_side") else ""
    rows = [
        [f"348 px photo, `read()` (CRAFT on {o['backend']}{detect})", num(o["read_348"]["median_s"], 3)],
    ]
    if "read_348_detect_native" in o:
        rows.append(["348 px photo, `read()` with OCR_DETECT_SIDE=0 (CRAFT sees 348 px)",
                     num(o["read_348_detect_native"]["median_s"], 3)])
    if "read_348_fp32" in o:
        rows.append(["348 px photo, `read()` with OCR_DETECTOR=fp32", num(o["read_348_fp32"]["median_s"], 3)])
    rows += [
        [f"12 MP photo ({o['big_size'][0]}×{o['big_size'][1]}), decode only", num(o["decode_12mp"]["median_s"], 3)],
        [f"12 MP photo, `read()` of the decoded image (capped to {o['ocr_max_side']} px)",
         num(o["read_12mp"]["median_s"], 3)],
        ["12 MP photo, decode + `read()`", num(o["decode_and_read_12mp"]["median_s"], 3)],
    ]
    rows += [[f"12 MP photo, `read()` with OCR_MAX_SIDE={side}", num(t["median_s"], 3)]
             for side, t in o.get("max_side_sweep_12mp", {}).items()]
    rows += [[f"12 MP photo, `read()`, detector: {name}", num(t["median_s"], 3)]
             for name, t in o.get("detector_variants_read_12mp", {}).items()]
    labels = {"348_8_boxes": "8 word boxes on the 348 px photo", "12mp_capped_16_boxes": "16 word boxes on the "
              "capped 12 MP photo"}
    for mode, timings in rec.items():
        rows += [[f"recogniser only, `recognize_boxes`, {labels.get(key, key)}: {mode}", num(t["median_s"], 3)]
                 for key, t in timings.items()]
    return "\n\n".join([
        "## OCR path (OcrReader, in-process)",
        f"Median wall seconds over {o['read_348']['repeats']} runs after a warm-up, torch threads = "
        f"{o['torch_threads']}. The 12 MP photo is a real grocery photo (`{Path(o['photo']).name}`) upscaled "
        f"bicubically and saved as JPEG ({num(o['big_jpeg_bytes'] / 2**20, 1)} MiB). Dynamic int8 quantisation "
        f"of the recogniser is already EasyOCR's default on CPU (`quantize=True`: "
        f"`torch.quantization.quantize_dynamic` on its LSTM/Linear layers; CRAFT is convolutional and unaffected); "
        f"the fp32 row is the same reader built with `quantize=False`. On CPU EasyOCR recognises boxes one at a "
        f"time whatever its batch_size. With random weights every box has a low confidence, so EasyOCR's contrast "
        f"retry recognises each box twice; real weights retry only the unsure ones.",
        table(["what", "seconds"], rows),
        "CRAFT (a VGG16-BN U-Net) is where the time goes. Measured while developing (interleaved in one process, "
        "640×640 input, 2 threads, on the then-busy machine, so only the ratios mean something): EasyOCR's eager "
        "CRAFT 8.3–9.3 s; batch norm folded into the convolutions (`torch.fx` fuse) 8.7 s; channels-last 6.3 s; "
        "both 5.6–5.8 s; ONNX Runtime 1.31 (CPU provider, same score maps to 1e-7) 5.0 s. The OCR member runs "
        "CRAFT on ONNX Runtime: static int8 on CPU (`OCR_DETECTOR=auto`, the default; its word recall against fp32 "
        "is in ACCURACY.md), fp32 with `OCR_DETECTOR=fp32` (the rows above measure both against the torch variants "
        "on a quiet machine). The recogniser's convolutions in channels-last layout (same texts) are what "
        "`OcrReader.load` adds on CPU. The recogniser rows above run one after another and swing ±20 % between runs; "
        "interleaved in one process (8 rounds, 16 word boxes, 2 threads, quiet machine) the medians were: int8 NCHW "
        "(EasyOCR's own) 0.771 s, int8 channels-last (shipped) 0.664 s, fp32 NCHW 0.706 s, fp32 channels-last "
        "0.635 s. So channels-last pays ~14 %; EasyOCR's int8 quantisation does not pay on this CPU (fp32 is ~5–8 % "
        "faster) but is kept: it is EasyOCR's default and the difference is within run-to-run noise."])
