"""Write a `path,label` CSV from an image folder, labelling each image with its top-level subfolder (or, with
--labels leaf, the folder holding it).

    .venv/bin/python scripts/make_csv.py ../shared/datasets/grocery/train grocery_coarse.csv
    .venv/bin/python scripts/make_csv.py ../shared/datasets/grocery/train/Packages packages.csv --labels leaf
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.learning.data import LABEL_SOURCES, balanced_subset, folder_records, write_csv  # noqa: E402
from shared.errors import ClassifierError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="image folder: <root>/<label>/**/<image>")
    parser.add_argument("out", type=Path, help="CSV to write")
    parser.add_argument("--per-class", type=int, default=0, help="keep at most N images per label (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --per-class sampling (default: %(default)s)")
    parser.add_argument("--labels", choices=LABEL_SOURCES, default="top",
                        help="top: the first-level subfolder; leaf: the folder holding the image (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        records = folder_records(args.root, args.labels)
    except ClassifierError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.per_class > 0:
        records = balanced_subset(records, args.per_class, args.seed)
    write_csv(records, args.out)
    labels = sorted({label for _, label in records})
    print(f"Wrote {len(records)} rows ({', '.join(labels)}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
