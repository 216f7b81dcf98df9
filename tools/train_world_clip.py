#!/usr/bin/env python
"""Trains the synthetic world's CLIP once per machine (cached) and prints its weights path.

The result is a standard open_clip checkpoint for ``configs/clip/chimeraseg-world-vit.json``:

    python tools/train_world_clip.py                 # the world CLIP (all 12 classes)
    python tools/train_world_clip.py --classes seen  # the control that never saw unseen classes

tools/train_net.py, tools/run_demo.py and the demos find the cached CLIP themselves (and train it
on first use), so running this first is optional.

Training takes a few minutes on 2 CPU cores and ends with a quality gate (held-out single-class
zero-shot accuracy); a CLIP that misses it is not cached and the command fails naming the classes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch

from chimeraseg.utils.checkpoint_io import read_weights_file
from chimeraseg.utils.tool_parser import tool_parser
from chimeraseg.world.cache import WorldClipCacheError, default_cache_dir, ensure_world_clip
from chimeraseg.world.clip_training import WorldClipConfig, WorldClipQualityError

EXAMPLES = (
    "python tools/train_world_clip.py",
    "python tools/train_world_clip.py --classes seen --json",
)


def get_parser() -> argparse.ArgumentParser:
    defaults = WorldClipConfig()
    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "--classes", choices=("all", "seen"), default=defaults.classes,
        help="captions of all 12 classes, or of the seen ones only (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="training seed (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)"
    )
    parser.add_argument(
        "--model-config", default=defaults.model_config, metavar="JSON",
        help="open_clip model-config JSON (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-dir", default=None, help=f"cache root (default: {default_cache_dir()})"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--retrain", action="store_true", help="train even if cached")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def learned_temperature(checkpoint: str | os.PathLike) -> float:
    """The CLIP's own softmax temperature, 1 / exp(logit_scale), read from its weights file.

    It is the natural ``MODEL.CHIMERASEG.SAM.TAU_C`` for that CLIP (0.01 for OpenAI's weights).
    """
    advice = "give the weights file that tools/train_world_clip.py printed"
    state = read_weights_file(checkpoint, "world CLIP checkpoint", advice)
    state = state.get("state_dict", state)
    return float(1.0 / state["logit_scale"].exp())


def main(argv: list[str] | None = None) -> int:
    """Trains (or finds) the CLIP; prints its paths and gate; returns the exit code."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = WorldClipConfig(
        model_config=args.model_config, classes=args.classes, seed=args.seed, steps=args.steps
    )
    try:
        clip = ensure_world_clip(config, cache_dir=args.cache_dir, retrain=args.retrain)
    except (WorldClipQualityError, WorldClipCacheError) as e:
        print(f"tools/train_world_clip.py: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(clip.report, indent=2))
    state = "trained now" if clip.trained_now else "from the cache"
    print(f"world CLIP ({args.classes}, {state}): {clip.report['message']}")
    print(f"MODEL.CLIP.NAME {clip.model_config}")
    print(f"MODEL.CLIP.PRETRAINED {clip.checkpoint}")
    print(f"temperature 1/logit_scale: {learned_temperature(clip.checkpoint):.4f}")
    return 0


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/train_world_clip.py")
