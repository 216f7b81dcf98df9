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

    # continue an interrupted run exactly (iteration, K schedule, optimizer, scheduler)
    python tools/train_net.py --resume --config-file <cfg>

    # 2 CPU processes (gloo), e.g. to try distributed code paths without GPUs
    python tools/train_net.py --num-gpus 2 --config-file <cfg> MODEL.DEVICE cpu
"""

from __future__ import annotations

import argparse
from typing import Any

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import chimeraseg.d2  # noqa: F401 -- registers backbones, datasets and the meta-architecture
from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
from chimeraseg.d2.determinism import apply_determinism
from chimeraseg.d2.trainer import load_trained_weights


def setup(args: argparse.Namespace) -> CfgNode:
    """Config from ``--config-file`` and ``KEY VALUE`` overrides; logging and output dir."""
    opts = list(args.opts)
    if args.eval_only:
        opts += ["MODEL.CHIMERASEG.BUILD_TEACHER", "False"]  # no CLIP image encoder at test time
    cfg = get_chimeraseg_cfg(args.config_file, opts)
    cfg.freeze()
    default_setup(cfg, args)  # seeds every RNG with SEED (+ rank)
    apply_determinism(cfg)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="chimeraseg")
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Trains (optionally resuming) or, with ``--eval-only``, evaluates ``MODEL.WEIGHTS``."""
    cfg = setup(args)
    if args.eval_only:
        model = ChimeraSegTrainer.build_model(cfg)
        load_trained_weights(model, cfg, resume=args.resume)
        results = ChimeraSegTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = ChimeraSegTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main() -> None:
    """Parses the standard detectron2 arguments and launches ``main`` on every process."""
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
