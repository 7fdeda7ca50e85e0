"""The OCR path (OcrReader in-process): read, decode, the side cap, detector runtimes, the recogniser."""
from __future__ import annotations

from pathlib import Path

from bench.report.format import num
from bench.report.markdown import render


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
    return render("benchmarks/ocr.md.j2", o=o, rows=rows, photo=Path(o["photo"]).name,
                  jpeg_mib=o["big_jpeg_bytes"] / 2**20)
