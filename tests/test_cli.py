"""The CLI as a user runs it: `python -m shared train/predict/evaluate`, in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from shared.learning.data import load_dataset

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.parametrize("command, option", [("train", "--folds"), ("predict", "--json"), ("evaluate", "--models"),
                                             ("deploy", "render"), ("classify-batch", "--part-rows"),
                                             ("train", "--engine")])
def test_help(command: str, option: str) -> None:
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    assert option in done.stdout


def test_train_then_predict(trained_models: Path, tiny_weights: Path, trained_settings: Settings,
                            tmp_path: Path) -> None:
    csv = trained_models.parent / "screenshots30.csv"
    # The fixture's feature cache already holds these images, so training recomputes nothing.
    env = {"FEATURE_CACHE_DIR": str(trained_settings.cache_dir), "TORCH_THREADS": "1"}
    done = run_cli("train", "--data", str(csv), "--out", str(tmp_path / "models"), "--weights", str(tiny_weights),
                   "--folds", "3", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Trained 2 classes into {tmp_path / 'models'}" in done.stdout
    assert "weights: ocr real, clip SYNTHETIC (random init: not CLIP's accuracy)" in done.stdout

    known = load_dataset(csv).paths[0]
    unseen = next(p for p in (Path(trained_settings.datasets_dir) / "screenshots" / "camera").glob("*.jpg")
                  if p.resolve() not in {q.resolve() for q in load_dataset(csv).paths})
    done = run_cli("predict", "--json", "--models", str(tmp_path / "models"), "--weights", str(tiny_weights),
                   str(known), str(unseen), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in results] == [str(known), str(unseen)]
    assert all(r["label"] in ("camera", "screenshots") and r["synthetic_weights"] for r in results)
    assert all(r["weights"] == {"ocr": "real", "clip": "synthetic"} for r in results)
    assert "ocr real, clip SYNTHETIC" in done.stderr.splitlines()[-1]


def test_train_and_evaluate_options_reach_their_functions() -> None:
    from shared.cli import parse_args

    args = parse_args(["train", "--data", "d", "--labels", "leaf", "--calibration-data", "batch"])
    assert (args.labels, args.calibration_data) == ("leaf", Path("batch"))
    assert parse_args(["train", "--data", "d"]).labels is None  # a folder's default: top; a CSV: its own
    assert parse_args(["evaluate", "--data", "d"]).labels is None  # default: as the models were trained
    with pytest.raises(SystemExit):
        parse_args(["train", "--data", "d", "--labels", "parent"])


def test_engine_sets_feature_engine_and_address_sets_ray_address() -> None:
    from shared.cli import _engine, parse_args

    settings = Settings()
    assert _engine(parse_args(["train", "--data", "d", "--engine", "ray"]), settings).feature_engine == "ray"
    assert _engine(parse_args(["evaluate", "--data", "d"]), settings.replace(feature_engine="ray")).feature_engine \
        == "ray"  # no --engine: FEATURE_ENGINE stands
    args = parse_args(["classify-batch", "--data", "d", "--out", "o", "--models", "m"])
    assert (args.weights, args.address, args.actors, args.part_rows) == (Path("m/weights"), None, 0, 2000)


@pytest.mark.parametrize("command", [["predict", "photo.jpg"], ["evaluate", "--data", "d"], ["serve"],
                                     ["classify-batch", "--data", "d", "--out", "o"]])
def test_weights_default_to_the_models_folders_own(command: list[str]) -> None:
    from shared.cli import parse_args

    assert parse_args([*command, "--models", "/elsewhere/models"]).weights == Path("/elsewhere/models/weights")
    assert parse_args(command).weights == Path("models/weights")
    assert parse_args([*command, "--models", "m", "--weights", "w"]).weights == Path("w")


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    done = run_cli("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("does not exist.")
