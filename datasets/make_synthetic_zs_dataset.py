#!/usr/bin/env python
"""Writes the bundled synthetic zero-shot dataset to ``<root>/synthetic_zs`` (seconds, idempotent).

The layout is the prepared COCO-Stuff layout; see ``chimeraseg/data/synthetic.py``.
"""

from __future__ import annotations

import sys

from chimeraseg.data.synthetic import make_synthetic_dataset
from chimeraseg.utils.tool_parser import add_datasets_root, tool_parser


def main(argv: list[str] | None = None) -> int:
    """Generates (or reuses) the dataset and prints its directory."""
    parser = tool_parser(
        __doc__.split("\n")[0],
        (
            "python datasets/make_synthetic_zs_dataset.py",
            "python datasets/make_synthetic_zs_dataset.py --datasets-root /tmp/datasets --seed 1",
        ),
    )
    add_datasets_root(parser, "--root")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument("--num-train", type=int, default=48, help="training images (48)")
    parser.add_argument("--num-val", type=int, default=128, help="validation images (128)")
    parser.add_argument("--height", type=int, default=160, help="image height (160)")
    parser.add_argument("--width", type=int, default=200, help="image width (200)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if complete")
    args = parser.parse_args(argv)
    out_dir = make_synthetic_dataset(
        args.datasets_root, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
        image_hw=(args.height, args.width), overwrite=args.overwrite,
    )  # fmt: skip
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
