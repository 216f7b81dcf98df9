#!/usr/bin/env python
"""A web page for ChimeraSeg on your own photo with your own class names (``make web``).

Examples::

    make demo && make web          # the synthetic model of `make demo`, http://127.0.0.1:7860

    # any trained ChimeraSeg (real CLIP configs too)
    python tools/web_demo.py --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml \\
        MODEL.WEIGHTS model_final.pth

    python tools/web_demo.py --host 0.0.0.0 --port 8080   # reachable from other machines

The page binds to 127.0.0.1 unless ``--host`` says otherwise and makes no network calls (Gradio
analytics off, system fonts, its own assets). The model is loaded once; every browser session has
its own vocabulary and results. Limits: :class:`chimeraseg.demo.session.Limits`.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "chimeraseg_mitb0_synthetic.yaml")
DEFAULT_WEIGHTS = os.path.join("output", "demo", "train", "model_final.pth")  # make demo's
EXAMPLE_FOLDER = os.path.join("synthetic_zs", "val2017")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file", metavar="FILE", help="a trained ChimeraSeg's config (default: make demo's)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--datasets", default=os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser.add_argument("--examples", type=int, default=4, help="synthetic validation images")
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run without MODEL.WEIGHTS (an untrained student; smoke tests only)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def model_source_args(args: argparse.Namespace) -> tuple[str, list[str], str]:
    """``(config file, overrides, description)`` of the chosen model source.

    Raises:
        SystemExit: the default source's checkpoint is missing (saying how to make it).
    """
    opts = list(args.opts)
    if args.allow_random_weights:
        opts += ["MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    if args.config_file:
        weights = opts[opts.index("MODEL.WEIGHTS") + 1] if "MODEL.WEIGHTS" in opts else "none"
        return args.config_file, opts, f"{os.path.basename(args.config_file)}, weights {weights}"
    if not os.path.isfile(DEFAULT_WEIGHTS) and not args.allow_random_weights:
        raise SystemExit(
            f"tools/web_demo.py: no trained model at {DEFAULT_WEIGHTS}: run `make demo` first "
            "(trains the synthetic model on CPU), or give --config-file FILE MODEL.WEIGHTS PATH"
        )
    opts = ["MODEL.WEIGHTS", DEFAULT_WEIGHTS, *opts]
    return DEFAULT_CONFIG, opts, f"the synthetic ChimeraSeg of `make demo` ({DEFAULT_WEIGHTS})"


def example_images(datasets: str, count: int) -> list[str]:
    """The first ``count`` synthetic validation images under ``datasets`` (none if absent)."""
    return sorted(glob.glob(os.path.join(datasets, EXAMPLE_FOLDER, "*.jpg")))[:count]


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.datasets)  # before registration
    config_file, opts, description = model_source_args(args)
    try:
        from chimeraseg.d2.web_source import build_d2_source
    except ImportError as e:
        raise SystemExit(f"tools/web_demo.py: {e}; see README.md, 'Install'") from e
    from chimeraseg.demo.session import DEFAULT_LIMITS, WebDemo
    from chimeraseg.demo.web import build_app, launch
    from chimeraseg.utils.checkpoint_io import CheckpointError
    from chimeraseg.world.cache import WorldClipCacheError
    from chimeraseg.world.clip_training import WorldClipQualityError

    bad_model = (OSError, ValueError, KeyError, CheckpointError)
    try:
        source = build_d2_source(config_file, opts, description)  # loaded once, before serving
    except (*bad_model, WorldClipCacheError, WorldClipQualityError) as e:
        raise SystemExit(f"tools/web_demo.py: cannot load the model: {e}") from e
    demo = WebDemo(source, DEFAULT_LIMITS)
    examples = example_images(args.datasets, args.examples)
    if not examples:
        print(f"[web_demo] no example images under {args.datasets} (make demo writes them)")
    print(f"[web_demo] {description}: http://{args.host}:{args.port}", file=sys.stderr)
    try:
        launch(build_app(demo, examples), demo, args.host, args.port, examples)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
