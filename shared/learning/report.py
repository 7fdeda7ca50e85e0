"""The report of a training or an evaluation: metrics.json, report.md and PNG plots, saying which weights are synthetic."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from sklearn.metrics import roc_curve

from shared import artifacts, weights
from shared.features.registry import extractor_class, extractor_kinds, part_label
from shared.learning.data import Dataset
from shared.learning.meta_model import STACK, subset_name

SUMMARY_KEYS = ("accuracy", "macro_f1", "roc_auc", "log_loss", "ece")
MAP_MAX_POINTS = 2000


class Embedding(NamedTuple):
    """Feature vectors of the scored images and their class ids: the report's 2-D map."""

    vectors: np.ndarray
    y: np.ndarray
    label: str  # whose vectors, as the extractor registry names its part: "CLIP"


def mapped_kind(kinds: Collection[str]) -> str | None:
    """The first of these extractor kinds (registry order) whose values the report draws as a map: "clip"."""
    return next((kind for kind in extractor_kinds() if kind in kinds and extractor_class(kind).embedding_map), None)


def synthetic_warning(parts: Mapping[str, str]) -> str:
    """The report's banner: which parts are synthetic, which real, and what that means for the numbers."""
    fake_kinds = weights.synthetic_parts(parts)
    fake = _labels(fake_kinds)
    real = _labels(kind for kind, what in parts.items() if what == "real")
    return (f"**SYNTHETIC WEIGHTS: {fake}.** The {fake} weights are randomly initialised, not pretrained."
            f"{f' The {real} weights are real.' if real else ''} The numbers of the models that use {fake} features "
            f"(the stack included) measure this pipeline on random features; they are NOT {weights.part_owners(fake_kinds)} accuracy.")


def plot_note(parts: Mapping[str, str]) -> str:
    """The footer a plot carries alone (slides, chats): only the synthetic parts; '' when none is."""
    fake = weights.synthetic_parts(parts)
    if not fake:
        return ""
    return f"SYNTHETIC {_labels(fake)} weights (random init): not {weights.part_owners(fake)} accuracy"


def _labels(kinds: Iterable[str]) -> str:
    return " and ".join(part_label(kind) for kind in kinds)


# --- report ------------------------------------------------------------------------------------
def report_context(manifest: dict, dataset: Dataset, errors: Mapping[int, str], title: str) -> dict:
    """What the report says besides the numbers: weights used, data, skipped files."""
    skipped = [{"path": str(dataset.paths[i]), "reason": reason} for i, reason in sorted(errors.items())]
    parts = weights.manifest_parts(manifest)
    return {"title": title, "features": manifest["features"], "weights": parts,
            "synthetic": "synthetic" in parts.values(), "data": dataset.summary(), "skipped": skipped,
            "notes": calibration_notes(manifest)}


def calibration_notes(manifest: dict) -> list[str]:
    """What the stack's probabilities are: the forests' votes, or calibrated on which batch."""
    calibration = manifest.get("calibration")
    if not calibration:
        return ["the stack's probabilities are its forests' votes, uncalibrated (`train --calibration-data` "
                "fits them to a labelled batch of the traffic the model will serve)"]
    full = calibration["temperatures"][subset_name(manifest["members"])]
    return [f"the stack's probabilities are calibrated (temperature) on {calibration['data']['images']} images of "
            f"{calibration['data']['source']}: T = {full} with every member (< 1 sharpens the forest's votes); "
            "scores on that batch itself flatter the calibration"]


def write_report(out: Path, results: dict, context: dict, y: np.ndarray, probas: Mapping[str, np.ndarray],
                 embedding: Embedding | None = None) -> list[Path]:
    """metrics.json, report.md, confusion.png, roc.png and, given an embedding (CLIP's), embedding_map.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_json(out / "metrics.json", {**results, "context": context})]
    written += _write_plots(out, results, y, probas, embedding, plot_note(_parts(context)))
    written.append(_write_markdown(out / "report.md", results, context, [p.name for p in written[1:]]))
    return written


def _parts(context: dict) -> dict[str, str]:
    """{kind: "real"|"synthetic"} of a report: as given, else from its feature configs."""
    return dict(context.get("weights") or weights.parts_of(context["features"]))


def _write_json(path: Path, payload: dict) -> Path:
    artifacts.write_bytes_atomic(path, (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())
    return path


def _write_markdown(path: Path, results: dict, context: dict, images: list[str]) -> Path:
    lines = [f"# {context['title']} report", ""]
    if context["synthetic"]:
        lines += [f"> {synthetic_warning(_parts(context))}", ""]
    lines += _weights_lines(context["features"]) + [""]
    lines += _data_lines(context, results) + [""]
    lines += _metrics_table(results) + [""]
    lines += _confusion_lines(results) + [""]
    lines += [f"![{name}]({name})" for name in images] + [""]
    lines += _skipped_lines(context["skipped"])
    artifacts.write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))
    return path


def _weights_lines(features: Mapping[str, dict]) -> list[str]:
    lines = ["## Weights", ""]
    for kind, cfg in sorted(features.items(), key=lambda item: bool(item[1].get("synthetic"))):
        synthetic = f"SYNTHETIC (randomly initialised; not {weights.part_owners([kind])} accuracy)"
        what = synthetic if cfg.get("synthetic") else "real weights"
        name = extractor_class(kind).describe(cfg)
        lines.append(f"- **{part_label(kind)}**: {name} — {what}; "
                     f"weights sha256 `{str(cfg.get('weights_sha256'))[:16]}…`")
    return lines


def _data_lines(context: dict, results: dict) -> list[str]:
    counts = ", ".join(f"{name}: {n}" for name, n in context["data"]["per_class"].items())
    return ["## Data", "", f"- source: `{context['data']['source']}`",
            f"- scored images: {results['n']} (per class in the set: {counts})",
            f"- skipped unreadable images: {len(context['skipped'])}"] + [f"- {line}" for line in context.get("notes", [])]


def _metrics_table(results: dict) -> list[str]:
    header = ["model", *SUMMARY_KEYS]
    lines = ["## Metrics", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results["summary"].items():
        cells = ["n/a" if row[k] is None else f"{row[k]:.4f}" for k in SUMMARY_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chance = results.get("ece_by_chance", {}).get("stack")
    if chance:
        lines += ["", f"ECE is noisy on {results['n']} images: a perfectly calibrated model with the stack's "
                      f"confidences would show {chance['median']:.4f} by chance (90th percentile {chance['p90']:.4f})."]
    return lines


def _confusion_lines(results: dict) -> list[str]:
    classes = results["classes"]
    lines = ["## Confusion matrix of the stack (rows: true, columns: predicted)", "",
             "| | " + " | ".join(classes) + " |", "|" + "---|" * (len(classes) + 1)]
    matrix = results["models"].get(STACK, next(iter(results["models"].values())))["confusion"]
    return lines + [f"| {name} | " + " | ".join(map(str, row)) + " |" for name, row in zip(classes, matrix)]


def _skipped_lines(skipped: list[dict]) -> list[str]:
    if not skipped:
        return ["## Skipped files", "", "None: every image could be read.", ""]
    return ["## Skipped files", ""] + [f"- `{s['path']}`: {s['reason']}" for s in skipped] + [""]


# --- plots -------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def _write_plots(out: Path, results: dict, y: np.ndarray, probas: Mapping[str, np.ndarray],
                 embedding: Embedding | None, note: str) -> list[Path]:
    # A plot travels alone (slides, chats): it carries the synthetic warning (`note`) itself.
    paths = [_plot_confusions(out / "confusion.png", results, note),
             _plot_rocs(out / "roc.png", results, y, probas, note)]
    if embedding is not None and len(embedding.vectors) >= 3:
        paths.append(_plot_embedding_map(out / "embedding_map.png", embedding, results["classes"], note))
    return paths


def _plot_confusions(path: Path, results: dict, note: str) -> Path:
    plt, classes = _pyplot(), results["classes"]
    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        matrix = np.asarray(results["models"][name]["confusion"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > matrix.max() / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_title(f"{name}\nacc {results['models'][name]['accuracy']:.3f}", fontsize=10)
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    return _save(fig, path, note)


def _plot_rocs(path: Path, results: dict, y: np.ndarray, probas: Mapping[str, np.ndarray], note: str) -> Path:
    plt, classes = _pyplot(), results["classes"]
    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for k in _roc_classes(len(classes)):
            if 0 < np.sum(y == k) < len(y):
                fpr, tpr, _ = roc_curve(y == k, probas[name][:, k])
                ax.plot(fpr, tpr, label=classes[k])
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        auc = results["models"][name]["roc_auc"]
        ax.set_title(f"{name}\nAUC {'n/a' if auc is None else f'{auc:.3f}'}", fontsize=10)
        ax.set_xlabel("false positive rate")
        if ax.get_lines()[:-1]:  # no curve when the scored set has one class: nothing to label
            ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("true positive rate")
    return _save(fig, path, note)


def _roc_classes(n_classes: int) -> list[int]:
    # Binary: one curve for the positive class (the other is its mirror image).
    return [1] if n_classes == 2 else list(range(n_classes))


def _plot_embedding_map(path: Path, embedding: Embedding, classes: Sequence[str], note: str) -> Path:
    from sklearn.decomposition import PCA

    plt, (clip, y, label) = _pyplot(), embedding
    keep = np.random.default_rng(0).permutation(len(clip))[:MAP_MAX_POINTS]
    points = PCA(n_components=2, random_state=0).fit_transform(clip[keep])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, name in enumerate(classes):
        mask = y[keep] == k
        ax.scatter(points[mask, 0], points[mask, 1], s=10, alpha=0.7, label=f"{name} ({mask.sum()})")
    shown = f"{len(keep)} images" if len(keep) == len(clip) else f"random {len(keep)} of {len(clip)} images"
    ax.set_title(f"{label} embeddings, PCA 2D ({shown})", fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8)
    return _save(fig, path, note)


def _save(fig: Any, path: Path, note: str) -> Path:
    if note:
        fig.suptitle(note, color="darkred", fontsize=10, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.93) if note else None)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path
