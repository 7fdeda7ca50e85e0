"""`python -m shared <command>`: weights, train, evaluate, predict, serve."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shared.config import Settings
from shared.errors import ClassifierError


def _cmd_weights(args: argparse.Namespace, settings: Settings) -> int:
    from shared import weights

    if args.synthetic:
        path = weights.write_synthetic_weights(args.out, settings, tiny=args.tiny)
        print(f"Wrote SYNTHETIC (randomly initialised) weights to {path}. "
              "Predictions made with them are not CLIP's or EasyOCR's accuracy.")
    else:
        weights.fetch_weights(args.out, settings)
        print(f"Downloaded and verified real weights into {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from shared import training

    manifest = training.train(
        data=args.data, out=args.out, weights_dir=args.weights, settings=settings,
        test_data=args.test_data, test_size=args.test_size, folds=args.folds, seed=args.seed,
    )
    print(f"Trained {len(manifest['classes'])} classes into {args.out}; report: {args.out / 'report' / 'report.md'}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from shared import evaluation

    metrics = evaluation.evaluate_models(args.models, args.data, args.weights, settings, out=args.out)
    print(json.dumps(metrics["summary"], indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from shared import training

    for result in training.predict_files(args.models, args.weights, args.images, settings):
        print(json.dumps(result, ensure_ascii=False) if args.json else training.format_prediction(result))
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from shared import serve

    return serve.serve(args.models, args.weights, settings, synthetic_ok=args.synthetic, demo_data=args.demo_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models, weights = Path("models"), Path("models/weights")

    p = sub.add_parser("weights", help="download real CLIP/EasyOCR weights, or write synthetic ones")
    p.add_argument("--out", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--synthetic", action="store_true",
                   help="write randomly initialised weights of the real architectures (offline; NOT pretrained)")
    p.add_argument("--tiny", action="store_true", help="with --synthetic: a tiny CLIP config, for fast tests")
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser("train", help="extract features, fit the three learners and the stacking meta-models")
    p.add_argument("--data", type=Path, required=True, help="image folder (class = first-level subfolder) or CSV path,label")
    p.add_argument("--out", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=None, help="held-out set; default: a stratified split of --data")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out fraction when no --test-data (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="stratified K for out-of-fold meta-features (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="score trained models on a labelled set and write a report")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--data", type=Path, required=True, help="image folder or CSV path,label")
    p.add_argument("--weights", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: MODELS/evaluation)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="classify image files with the stack and each member")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="run all four services on 127.0.0.1 (ports 5000-5003)")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--synthetic", action="store_true",
                   help="offline option: if real weights are missing, write and use SYNTHETIC ones")
    p.add_argument("--demo-data", type=Path, default=None,
                   help="dataset for the demo model trained when MODELS has none (default: DATASETS_DIR/screenshots)")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args, Settings.from_env())
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
