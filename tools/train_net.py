#!/usr/bin/env python
"""Train or evaluate Chimera-Seg with detectron2.

Examples::

    # 8 GPUs, COCO-Stuff 156/15, MiT-B4 (paper setting)
    python tools/train_net.py --num-gpus 8 \\
        --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml \\
        MODEL.CLIP.PRETRAINED /path/to/ViT-B-16.pt

    # evaluation only (loads MODEL.WEIGHTS, verifies CLIP weights and vocabulary; refuses to run
    # without trained weights unless MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS True)
    python tools/train_net.py --eval-only --config-file <cfg> MODEL.WEIGHTS <dir>/model_final.pth

    # continue an interrupted run exactly (weights, optimizer, scheduler, data stream position
    # and every RNG; docs/CLUSTER.md, 'What a resume guarantees')
    python tools/train_net.py --resume --config-file <cfg>

    # 2 CPU processes (gloo), e.g. to try distributed code paths without GPUs
    python tools/train_net.py --num-gpus 2 --config-file <cfg> MODEL.DEVICE cpu

    # torchrun: one world of 8 ranks (a restarted worker resumes; docs/CLUSTER.md)
    torchrun --nproc_per_node 8 tools/train_net.py --config-file <cfg>
"""

from __future__ import annotations

# First, before detectron2: chimeraseg.d2 imports detectron2's modules without their import-time
# warnings (chimeraseg.utils.tool_parser.quiet_import_warnings) and registers the backbones,
# datasets and the meta-architecture.
import chimeraseg.d2  # noqa: F401, I001

# isort: split

import argparse
import logging
from typing import Any

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
from chimeraseg.d2.backbone import without_replaced_imagenet_init
from chimeraseg.d2.determinism import apply_determinism
from chimeraseg.d2.launch import launch_training
from chimeraseg.d2.trainer import load_trained_weights
from chimeraseg.d2.world_clip import fill_world_clip
from chimeraseg.utils.tool_parser import examples_epilog

EXAMPLES = (
    "python tools/train_net.py --num-gpus 8 "
    "--config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml",
    "python tools/train_net.py --eval-only "
    "--config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml "
    "MODEL.WEIGHTS output/coco-stuff-164k-156/chimeraseg_mitb4_80k/model_final.pth",
)


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``--config-file`` and ``KEY VALUE`` overrides; logging and output dir."""
    opts = list(args.opts)
    if args.eval_only:
        opts += ["MODEL.CHIMERASEG.BUILD_TEACHER", "False"]  # no CLIP image encoder at test time
    cfg = get_chimeraseg_cfg(args.config_file, opts)
    clip_line = fill_world_clip(cfg)  # the world CLIP, cached or trained now, as run_demo.py
    cfg.freeze()
    default_setup(cfg, args)  # seeds every RNG with SEED (+ rank)
    apply_determinism(cfg)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="chimeraseg")
    if clip_line:
        logging.getLogger("chimeraseg").info(clip_line)
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Trains (optionally resuming) or, with ``--eval-only``, evaluates ``MODEL.WEIGHTS``."""
    cfg = setup(args)
    model_cfg = without_replaced_imagenet_init(cfg, resume=args.resume)
    if args.eval_only:
        model = ChimeraSegTrainer.build_model(model_cfg)
        load_trained_weights(model, cfg, resume=args.resume)
        results = ChimeraSegTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = ChimeraSegTrainer(model_cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def get_parser() -> argparse.ArgumentParser:
    """detectron2's standard arguments, with this tool's examples at the end of ``--help``."""
    return default_argument_parser(epilog=examples_epilog(EXAMPLES))


def invoke_main() -> None:
    """Parses the standard detectron2 arguments and runs ``main`` on every process."""
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch_training(main, args)  # detectron2's launch, or one rank of torchrun's world


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(invoke_main, "tools/train_net.py")
