"""Prediction on image files for the CLI: the stack's class and every member's probabilities, per file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from shared.config import Settings
from shared.learning import evaluation
from shared.weights import manifest_parts, synthetic_parts


def predict_files(models_dir: Path, weights_dir: Path, paths: Sequence[Path], settings: Settings) -> list[dict]:
    """For each file: the stack's class, label and probabilities, and each member's; unreadable files get an error."""
    scored = evaluation.score_files(models_dir, weights_dir, list(paths), settings, progress=False)
    classes = scored.manifest["classes"]
    position = {row: i for i, row in enumerate(scored.rows)}
    return [_prediction(path, classes, scored, position.get(i), scored.errors.get(i)) for i, path in enumerate(paths)]


def _prediction(path: Path, classes: list[str], scored: evaluation.Scored, row: int | None, error: str | None) -> dict:
    if row is None:
        return {"path": str(path), "error": error or "unreadable"}
    stack = scored.probas[evaluation.STACK][row]
    k = int(np.argmax(stack))
    result = {"path": str(path), "class_id": k, "label": classes[k], "proba": round(float(stack[k]), 6),
              "probas": _named(classes, stack),
              "members": {name: _named(classes, p[row]) for name, p in scored.probas.items() if name != evaluation.STACK},
              "model_version": scored.manifest["model_version"]}
    result["weights"] = manifest_parts(scored.manifest)
    if "synthetic" in result["weights"].values():
        result["synthetic_weights"] = True
    return result


def _named(classes: list[str], proba: np.ndarray) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(classes, proba)}


def format_prediction(result: dict) -> str:
    """The stack's class and probability, then one row of class probabilities for the stack and each member."""
    if "error" in result:
        return f"{result['path']}: ERROR {result['error']}"
    fake = synthetic_parts(result.get("weights", {}))
    note = f" [synthetic {' and '.join(fake)} weights]" if fake else ""
    rows = {evaluation.STACK: result["probas"], **dict(sorted(result["members"].items()))}
    width = max(map(len, rows))
    lines = [f"{result['path']}: {result['label']} ({result['proba']:.2f}){note}"]
    lines += [f"  {name:<{width}}  " + "  ".join(f"{label} {p:.2f}" for label, p in probas.items())
              for name, probas in rows.items()]
    return "\n".join(lines)
