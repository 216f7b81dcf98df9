#!/usr/bin/env python
"""The README's main job (``make demo``): synthetic data -> CPU training -> evaluation -> images.

1. writes the bundled synthetic zero-shot dataset to ``$DETECTRON2_DATASETS`` (default
   ``./datasets``), 2. trains ``configs/synthetic/chimeraseg_mitb0_synthetic.yaml`` on CPU,
3. evaluates it (sIoU / uIoU / hIoU), 4. writes overlays and similarity maps to ``--output``.

CLIP: the synthetic config uses the synthetic world's own CLIP
(``configs/clip/chimeraseg-world-vit.json``), trained here on first use in a few minutes and cached
(``tools/train_world_clip.py``), so unseen-class numbers are meaningful offline. Other configs use
their own CLIP (OpenAI ViT-B/16). ``--clip-weights PATH`` overrides the weights;
``--allow-random-clip`` is for smoke runs only (the pipeline works, the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from chimeraseg.clip.cli import add_clip_arguments
from chimeraseg.utils.tool_parser import add_datasets_root, tool_parser

INSTALL_HINT = (
    "tools/run_demo.py: detectron2 is not installed; `make detectron2` builds the commit pinned "
    f"in the Makefile (DETECTRON2_COMMIT), or: {sys.executable} -m pip install "
    "--no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git@<commit>' "
    "(see README.md, 'Install')"
)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "chimeraseg_mitb0_synthetic.yaml")
EXAMPLES = (
    "python tools/run_demo.py",
    "python tools/run_demo.py --output output/demo SOLVER.MAX_ITER 100",
)


def get_parser() -> argparse.ArgumentParser:
    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    add_clip_arguments(parser, name=False, default_weights=None)
    parser.add_argument(
        "--config-file", default=DEFAULT_CONFIG, metavar="FILE",
        help="config to train (default: the synthetic MiT-B0 config)",
    )  # fmt: skip
    add_datasets_root(parser, "--datasets")
    parser.add_argument(
        "--output", default="output/demo", metavar="DIR", help="training and visualisations"
    )
    parser.add_argument("--num-vis", type=int, default=6, help="validation images to visualise")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def clip_opts(args: argparse.Namespace) -> list[str]:
    """Config overrides for ``--clip-weights`` / ``--allow-random-clip``."""
    if args.clip_weights:
        return ["MODEL.CLIP.PRETRAINED", args.clip_weights]
    if args.allow_random_clip:
        return ["MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.ALLOW_RANDOM_INIT", "True"]
    return []


def check_clip(cfg: CfgNode, world: bool = False) -> None:  # noqa: F821 -- lazy detectron2
    """Loads CLIP before any work; exits saying what to do when the weights are unavailable.

    Args:
        cfg: the config (``MODEL.CLIP.*``).
        world: the weights are the cached world CLIP (the advice is then to retrain it).
    """
    from chimeraseg.d2.meta_arch import build_clip_from_config
    from chimeraseg.world.cache import retrain_advice
    from chimeraseg.world.clip_training import WorldClipConfig

    try:
        build_clip_from_config(cfg)
    except Exception as e:  # noqa: BLE001 -- any loading failure gets the same advice
        advice = (
            f"The cached world CLIP is damaged: {retrain_advice(WorldClipConfig())}."
            if world
            else "Pass --clip-weights PATH (e.g. OpenAI's ViT-B-16.pt) or --allow-random-clip "
            "(smoke run; the metrics are then meaningless)."
        )
        raise SystemExit(
            f"tools/run_demo.py: CLIP weights '{cfg.MODEL.CLIP.PRETRAINED}' could not be loaded "
            f"({e!s:.300}).\n{advice}"
        ) from None


def resolve_clip(cfg: CfgNode, args: argparse.Namespace) -> str:  # noqa: F821
    """Fills in the world CLIP's weights when the config needs them; says which CLIP and why.

    Returns:
        One line for the log: the CLIP used and the reason.
    """
    c = cfg.MODEL.CLIP
    if args.allow_random_clip:
        return (
            "CLIP: RANDOM weights (--allow-random-clip): a smoke run, unseen numbers mean nothing"
        )
    if args.clip_weights:
        return f"CLIP: {c.NAME} with weights {args.clip_weights} (--clip-weights)"
    from chimeraseg.d2.world_clip import fill_world_clip
    from chimeraseg.world.cache import WorldClipCacheError
    from chimeraseg.world.clip_training import WorldClipQualityError

    try:
        line = fill_world_clip(cfg)
    except (WorldClipQualityError, WorldClipCacheError) as e:
        raise SystemExit(f"tools/run_demo.py: {e}") from e
    return line or f"CLIP: {c.NAME} / {c.PRETRAINED or 'random'} (as the config says)"


def main(argv: list[str] | None = None) -> dict:
    """Runs the four steps; returns the evaluation results."""
    args = get_parser().parse_args(argv)
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2) from None
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.datasets_root)  # before registration
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.logger import setup_logger

    from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg
    from chimeraseg.d2.data import build_zero_shot_augmentations
    from chimeraseg.d2.predictor import ChimeraSegDemo, run_on_images
    from chimeraseg.d2.world_clip import WORLD_CLIP_LINE
    from chimeraseg.data.synthetic import make_synthetic_dataset

    timings: dict[str, float] = {}
    start = time.perf_counter()
    opts = clip_opts(args) + ["OUTPUT_DIR", os.path.join(args.output, "train")] + args.opts
    cfg = get_chimeraseg_cfg(args.config_file, opts)
    setup_logger(output=cfg.OUTPUT_DIR, name="chimeraseg")
    setup_logger(output=cfg.OUTPUT_DIR)
    line = resolve_clip(cfg, args)
    print(f"[run_demo] {line}", flush=True)
    check_clip(cfg, world=line.startswith(WORLD_CLIP_LINE))
    timings["CLIP"] = time.perf_counter() - start

    t = time.perf_counter()
    path = make_synthetic_dataset(os.environ["DETECTRON2_DATASETS"])
    timings["dataset"] = time.perf_counter() - t
    print(f"[run_demo] synthetic dataset: {path}")

    t = time.perf_counter()
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)  # as train_net.py's default_setup does
    trainer = ChimeraSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()  # detectron2's EvalHook evaluates after the last iteration
    timings["training" if results is None else "training + evaluation"] = time.perf_counter() - t
    if results is None:
        t = time.perf_counter()
        results = ChimeraSegTrainer.test(cfg, trainer.model)
        timings["evaluation"] = time.perf_counter() - t
    metrics = results["sem_seg"]

    t = time.perf_counter()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    test_set = cfg.DATASETS.TEST[0]
    model.set_vocabulary_from_dataset(test_set)
    demo = ChimeraSegDemo(
        model,
        build_zero_shot_augmentations(cfg, is_train=False),
        cfg.TEST.GAMMA,
        colors=MetadataCatalog.get(test_set).get("stuff_colors"),
    )
    images = [d["file_name"] for d in DatasetCatalog.get(test_set)[: args.num_vis]]
    vis_dir = os.path.join(args.output, "visualizations")
    run_on_images(demo, images, vis_dir, similarity=model.model.teacher is not None)
    timings["visualisation"] = time.perf_counter() - t

    print(
        f"[run_demo] {test_set} (gamma {cfg.TEST.GAMMA:g}): sIoU {metrics['sIoU']:.2f}  "
        f"uIoU {metrics['uIoU']:.2f}  hIoU {metrics['hIoU']:.2f}  mIoU {metrics['mIoU']:.2f}"
    )
    print(f"[run_demo] visualisations: {vis_dir}; checkpoints and metrics: {cfg.OUTPUT_DIR}")
    timings["total"] = time.perf_counter() - start
    print("[run_demo] time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return results


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/run_demo.py")
