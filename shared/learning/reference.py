"""What a model keeps of its training data, for the traffic it serves: `reference/training.npz` in the model folder.

- the sha256 of every image it was trained or tested on: labelled traffic of those images is not new evidence, so
  live quality and calibration exports leave it out (and count it);
- the members' out-of-fold probabilities and the training classes: `restack` refits the meta-models on them plus
  the labelled traffic, and drift tests compare served probabilities against them;
- the stack's probabilities on the held-out side (the stack has no out-of-fold rows of its own);
- each text member's answer to no text, to count the photos in which it read nothing.

Plain arrays in one .npz (no pickles), listed and hashed in the manifest like every artifact.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from shared import artifacts
from shared.errors import ArtifactError

REFERENCE_PATH = "reference/training.npz"


@dataclass
class Reference:
    """A model's training reference; every probability matrix is (n, K) in the manifest's class order."""

    classes: list[str]
    y: np.ndarray  # training classes (ids), rows as oof
    oof: dict[str, np.ndarray]  # {member: out-of-fold probabilities on the training photos}
    stack_held_out: np.ndarray  # the stack's probabilities on the held-out photos
    images: frozenset[str]  # sha256 of every image trained or tested on
    empty: dict[str, np.ndarray] = field(default_factory=dict)  # {text member: its (K,) answer to no text}

    def class_share(self) -> np.ndarray:
        """(K,) share of each class among the training photos."""
        counts = np.bincount(self.y, minlength=len(self.classes)).astype(float)
        return counts / max(counts.sum(), 1.0)


def save_reference(out: Path, classes: list[str], y: np.ndarray, oof: Mapping[str, np.ndarray],
                   stack_held_out: np.ndarray, images: Iterable[str],
                   empty: Mapping[str, np.ndarray] | None = None) -> None:
    """Write reference/training.npz (list it in the manifest's files to have it hashed)."""
    arrays = {"classes": np.asarray(classes, dtype=str), "y": np.asarray(y, dtype=np.int32),
              "stack_held_out": np.asarray(stack_held_out, dtype=np.float32),
              "images": np.asarray(sorted(set(images)), dtype=str)}
    arrays |= {f"oof.{name}": np.asarray(p, dtype=np.float32) for name, p in oof.items()}
    arrays |= {f"empty.{name}": np.asarray(p, dtype=np.float64) for name, p in (empty or {}).items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(out) / REFERENCE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_bytes_atomic(path, buf.getvalue())


def load_reference(models_dir: Path, manifest: dict) -> Reference | None:
    """The model's reference, its hash checked against the manifest; None for models trained before it existed."""
    expected = manifest.get("files", {}).get(REFERENCE_PATH)
    if expected is None:
        return None
    path = Path(models_dir) / REFERENCE_PATH
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactError(f"{path} does not match the sha256 the manifest records ({expected}). Retrain or restore it.")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return Reference(
            classes=[str(c) for c in npz["classes"]], y=npz["y"].astype(np.int64),
            oof={key.split(".", 1)[1]: npz[key].astype(np.float64) for key in npz.files if key.startswith("oof.")},
            stack_held_out=npz["stack_held_out"].astype(np.float64), images=frozenset(str(h) for h in npz["images"]),
            empty={key.split(".", 1)[1]: npz[key] for key in npz.files if key.startswith("empty.")})
