#!/usr/bin/env python
"""Measures the pseudo masks (latent regions, unseen labels) against the full ground truth.

For each image of a dataset with full labels, hides the unseen classes as training does, runs the
frozen CLIP teacher and the pseudo-mask generator, and reports coverage of the hidden pixels,
purity of the latent regions, regions per image and, transductively, unseen-label precision,
recall and IoU (see ``chimeraseg/evaluation/pseudo_mask_quality/``). No detectron2 needed.

Examples::

    python tools/pseudo_mask_quality.py --dataset-dir datasets/synthetic_zs --subset train2017 \\
        --split synthetic --clip-name configs/clip/chimeraseg-world-vit.json \\
        --clip-weights world_clip.pt --templates zegclip15 --sweep --setting both
    python tools/pseudo_mask_quality.py --image-dir datasets/coco/train2017 \\
        --label-dir datasets/coco/stuffthingmaps_detectron2/train2017 --split coco_stuff_171 \\
        --clip-weights ViT-B-16.pt --short-side 512 --crop 512 --max-images 100 --scales 2,4,8
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from chimeraseg.clip.cli import add_clip_arguments, clip_weights
from chimeraseg.clip.loading import load_clip
from chimeraseg.clip.teacher import DENSE_PATHS
from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.splits import get_split
from chimeraseg.evaluation.pseudo_mask_quality import (
    format_sweep_table,
    load_samples,
    recommend,
    sweep,
)
from chimeraseg.evaluation.report import write_json
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig
from chimeraseg.utils.tool_parser import add_deprecated_alias, tool_parser

DEFAULT_SWEEP_SCALES = "2,4,8;4,8;2,4;4;8;2"
MODES = ("inductive", "transductive")
EXAMPLES = (
    "python tools/pseudo_mask_quality.py --dataset-dir datasets/synthetic_zs --split synthetic "
    "--clip-name configs/clip/chimeraseg-world-vit.json --clip-weights world_clip.pt "
    "--templates zegclip15 --sweep --setting both",
    "python tools/pseudo_mask_quality.py --image-dir datasets/coco/train2017 "
    "--label-dir datasets/coco/stuffthingmaps_detectron2/train2017 --split coco_stuff_171 "
    "--clip-weights ViT-B-16.pt --short-side 512 --crop 512 --max-images 100 "
    "--output-json pseudo.json",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see ``--help``)."""
    parser = tool_parser(__doc__.split("\n\n")[0], EXAMPLES)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset-dir", metavar="DIR",
        help="one dataset's prepared folder (not the datasets root), e.g. datasets/synthetic_zs",
    )  # fmt: skip
    data.add_argument("--subset", default="train2017", help="with --dataset-dir: image subfolder")
    data.add_argument("--image-dir", help="image directory (overrides --dataset-dir)")
    data.add_argument("--label-dir", help="full-label directory (overrides --dataset-dir)")
    data.add_argument("--image-ext", default=".jpg", help="image file suffix (default .jpg)")
    data.add_argument("--split", required=True, help="named split, e.g. synthetic, coco_stuff_171")
    data.add_argument("--split-variant", default=None, help="variant of --split (e.g. cascade)")
    data.add_argument("--max-images", type=int, default=None, help="first N images (default all)")
    data.add_argument("--short-side", type=int, default=None, help="resize (default: as stored)")
    data.add_argument("--crop", default=None, help="centre crop 'H,W' or 'S' after resizing")
    add_clip_arguments(parser, name=True, default_weights="openai")
    clip = parser.add_argument_group("text and dense path")
    clip.add_argument("--templates", default="imagenet80+scene", help="text prompt template set")
    clip.add_argument(
        "--dense-path", default="value_ffn", choices=DENSE_PATHS,
        help="the teacher's dense features (default value_ffn)",
    )  # fmt: skip
    masks = parser.add_argument_group("pseudo masks")
    masks.add_argument(
        "--setting", default="inductive", choices=(*MODES, "both"), help="generator mode"
    )
    masks.add_argument(
        "--scales",
        default=",".join(str(k) for k in PseudoMaskConfig.scales),
        help="window scales, e.g. '2,4,8' (default: the generator's)",
    )
    masks.add_argument(
        "--min-area", type=int, default=PseudoMaskConfig.min_area,
        help="smallest region kept, in feature-map positions (default: the generator's)",
    )  # fmt: skip
    masks.add_argument(
        "--merge-threshold", type=float, default=PseudoMaskConfig.merge_threshold,
        help="cosine similarity above which regions merge (default: the generator's)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="evaluate every scale set of --sweep-scales with both dense paths; prints a table",
    )
    parser.add_argument(
        "--sweep-scales", default=DEFAULT_SWEEP_SCALES, help="';'-separated scale sets"
    )
    parser.add_argument("--min-purity", type=float, default=80.0, help="recommendation floor, %%")
    parser.add_argument(
        "--output-json", default=None, metavar="FILE", help="write all results to this JSON file"
    )
    add_deprecated_alias(parser, "--json", "--output-json")
    return parser.parse_args(argv)


def parse_scales(text: str) -> tuple[int, ...]:
    """``"2,4,8"`` -> ``(2, 4, 8)``."""
    try:
        scales = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ValueError(f"scales must be comma-separated integers, got {text!r}") from e
    if not scales or min(scales) < 1:
        raise ValueError(f"scales must be positive integers, got {text!r}")
    return scales


def parse_crop(text: str | None) -> tuple[int, int] | None:
    """``"128"`` -> ``(128, 128)``, ``"128,160"`` -> ``(128, 160)``, None -> None."""
    if text is None:
        return None
    sides = parse_scales(text)
    if len(sides) not in (1, 2):
        raise ValueError(f"--crop must be 'S' or 'H,W', got {text!r}")
    return (sides[0], sides[-1])


def data_dirs(args: argparse.Namespace) -> tuple[str, str]:
    """``(image_dir, label_dir)`` from the explicit options or the prepared layout."""
    image_dir, label_dir = args.image_dir, args.label_dir
    if args.dataset_dir:
        image_dir = image_dir or os.path.join(args.dataset_dir, args.subset)
        label_dir = label_dir or os.path.join(
            args.dataset_dir, "stuffthingmaps_detectron2", args.subset
        )
    if not image_dir or not label_dir:
        raise ValueError("give --dataset-dir, or both --image-dir and --label-dir")
    return image_dir, label_dir


def _load_clip(args: argparse.Namespace) -> nn.Module:
    """The frozen CLIP of ``--clip-name`` / ``--clip-weights`` (random only if allowed)."""
    weights = clip_weights(args)
    return load_clip(args.clip_name, pretrained=weights, allow_random_init=args.allow_random_clip)


def run(args: argparse.Namespace, clip_model: nn.Module | None = None) -> dict[str, Any]:
    """Loads data and CLIP, evaluates, prints the results; returns the JSON payload.

    Args:
        args: parsed options.
        clip_model: use this CLIP instead of loading ``--clip-name`` / ``--clip-weights``.
    """
    split = get_split(args.split, args.split_variant)
    image_dir, label_dir = data_dirs(args)
    samples = load_samples(
        image_dir, label_dir, split.num_classes, short_side=args.short_side,
        crop=parse_crop(args.crop), max_images=args.max_images, image_ext=args.image_ext,
    )  # fmt: skip
    clip_model = clip_model if clip_model is not None else _load_clip(args)
    modes = MODES if args.setting == "both" else (args.setting,)
    text = None
    if "transductive" in modes:
        with torch.no_grad():
            text = encode_class_names(clip_model, list(split.class_names), args.templates)
    scale_sets = (
        [parse_scales(s) for s in args.sweep_scales.split(";") if s.strip()]
        if args.sweep
        else [parse_scales(args.scales)]
    )
    rows = sweep(
        clip_model, samples, class_names=split.class_names, seen_ids=split.seen,
        unseen_ids=split.unseen, scale_sets=scale_sets,
        dense_paths=DENSE_PATHS if args.sweep else (args.dense_path,), modes=modes,
        base_config=PseudoMaskConfig(min_area=args.min_area, merge_threshold=args.merge_threshold),
        text=text,
    )  # fmt: skip
    h, w = samples[0].true.shape
    print(f"{len(samples)} images ({h}x{w} first), split {split.name}, {image_dir}")
    print(format_sweep_table(rows, min_purity=args.min_purity))
    best = recommend(rows, min_purity=args.min_purity)
    for mode, row in best.items():
        if row is None:
            print(f"{mode}: no setting reaches purity >= {args.min_purity:g}%")
        else:
            print(
                f"{mode}: best coverage at purity >= {args.min_purity:g}%: scales "
                f"{row['scales']}, dense path {row['dense_path']} (coverage "
                f"{row['coverage']:.1f}%, purity {row['purity_weighted']:.1f}%)"
            )
    payload = {
        "image_dir": image_dir,
        "label_dir": label_dir,
        "split": split.name,
        "images": len(samples),
        "clip_name": args.clip_name,
        "clip_weights": args.clip_weights,
        "dense_paths": sorted({r["dense_path"] for r in rows}),
        "templates": args.templates,
        "rows": [{**r, "scales": list(r["scales"])} for r in rows],
        "recommended": {
            m: None if r is None else {"scales": list(r["scales"]), "dense_path": r["dense_path"]}
            for m, r in best.items()
        },
    }
    if args.output_json:
        write_json(args.output_json, payload)
        print(f"wrote {args.output_json}")
    return payload


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: parses ``argv`` and runs."""
    return run(parse_args(argv))


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/pseudo_mask_quality.py")
