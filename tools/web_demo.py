#!/usr/bin/env python
"""A web page for ChimeraSeg on your own photo with your own class names (``make web``).

Examples::

    make demo && make web          # the synthetic model of `make demo`, http://127.0.0.1:7860

    # any trained ChimeraSeg (real CLIP configs too)
    python tools/web_demo.py --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml \\
        MODEL.WEIGHTS model_final.pth

    python tools/web_demo.py --onnx export/   # an export of tools/export_onnx.py, no detectron2
    python tools/web_demo.py --host 0.0.0.0 --port 8080   # reachable from other machines

The page binds to 127.0.0.1 unless ``--host`` says otherwise and makes no network calls (Gradio
analytics off, system fonts, its own assets). The model is loaded once; every browser session has
its own vocabulary and results. Limits: :class:`chimeraseg.demo.session.Limits`.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chimeraseg.demo.source import SegmentationSource

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "chimeraseg_mitb0_synthetic.yaml")
DEFAULT_WEIGHTS = os.path.join("output", "demo", "train", "model_final.pth")  # make demo's
EXAMPLE_FOLDER = os.path.join("synthetic_zs", "val2017")
EXAMPLES = (
    "python tools/web_demo.py --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml "
    "MODEL.WEIGHTS output/coco-stuff-164k-156/chimeraseg_mitb4_80k/model_final.pth",
    "python tools/web_demo.py --onnx export/ --port 8080",
)


def get_parser() -> argparse.ArgumentParser:
    from chimeraseg.utils.tool_parser import add_datasets_root, tool_parser

    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "--config-file", metavar="FILE", help="a trained ChimeraSeg's config (default: make demo's)"
    )
    parser.add_argument(
        "--onnx", metavar="DIR", help="an export of tools/export_onnx.py (no detectron2 needed)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (7860)")
    add_datasets_root(parser, "--datasets")
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


def onnx_source(folder: str) -> SegmentationSource:
    """The ``--onnx`` source (fp32 image graph and the text graph; no detectron2)."""
    from chimeraseg.demo.onnx_source import OnnxSource
    from chimeraseg.deploy.metadata import ExportError
    from chimeraseg.deploy.runtime import OnnxSegmenter

    try:
        return OnnxSource(OnnxSegmenter(folder, graph="fp32"), f"ONNX export {folder}")
    except (OSError, ValueError, ExportError, ImportError) as e:
        raise SystemExit(f"tools/web_demo.py: --onnx {folder}: {e}") from e


def d2_source(args: argparse.Namespace) -> SegmentationSource:
    """The detectron2 source: ``--config-file`` with its weights, or ``make demo``'s model."""
    config_file, opts, description = model_source_args(args)
    try:
        from chimeraseg.d2.web_source import build_d2_source
    except ImportError as e:
        raise SystemExit(f"tools/web_demo.py: {e}; see README.md, 'Install'") from e
    from chimeraseg.utils.checkpoint_io import CheckpointError
    from chimeraseg.world.cache import WorldClipCacheError
    from chimeraseg.world.clip_training import WorldClipQualityError

    bad_model = (OSError, ValueError, KeyError, CheckpointError)
    try:
        return build_d2_source(config_file, opts, description)
    except (*bad_model, WorldClipCacheError, WorldClipQualityError) as e:
        raise SystemExit(f"tools/web_demo.py: cannot load the model: {e}") from e


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.datasets_root)  # before registration
    if args.onnx and (args.config_file or args.opts or args.allow_random_weights):
        raise SystemExit("tools/web_demo.py: --onnx takes no config, overrides or weights flags")
    from chimeraseg.demo.session import DEFAULT_LIMITS, WebDemo

    source = onnx_source(args.onnx) if args.onnx else d2_source(args)  # loaded once
    description = source.description
    demo = WebDemo(source, DEFAULT_LIMITS)
    try:
        demo.claim_gradio_cache()  # before gradio is imported
        from chimeraseg.demo.web import build_app, launch

        signal.signal(signal.SIGTERM, _interrupt)  # stops like Ctrl-C: the finally cleans up
        examples = example_images(args.datasets_root, args.examples)
        if not examples:
            root = args.datasets_root
            print(f"[web_demo] no example images under {root} (make demo writes them)")
        print(f"[web_demo] {description}: http://{args.host}:{args.port}", file=sys.stderr)
        launch(build_app(demo, examples), demo, args.host, args.port)
    finally:
        demo.close()  # the runs' files, the example copies and Gradio's copies


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: raises KeyboardInterrupt, which stops the server as Ctrl-C does."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/web_demo.py")
