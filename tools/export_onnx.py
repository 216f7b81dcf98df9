#!/usr/bin/env python
"""Export a trained Chimera-Seg to ONNX: image and text graphs that keep the open vocabulary.

Examples::

    python tools/export_onnx.py --config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml \\
        --output export/ MODEL.WEIGHTS output/demo/train/model_final.pth

    # also an int8 image graph, and one graph with a fixed vocabulary baked in (no tokenizer)
    python tools/export_onnx.py --config-file <cfg> --output export/ --int8 \\
        --vocabulary "grass,sky,water" --unseen water MODEL.WEIGHTS <pth>

The folder (``metadata.json``, ``image_encoder.onnx``, ``text_encoder.onnx``, optionally
``image_encoder_int8.onnx`` and ``segmenter.onnx``) runs with ``chimeraseg.deploy.OnnxSegmenter``
or ``tools/demo.py --onnx <folder>``, without detectron2 (docs/DEPLOY.md). An
existing non-empty output folder is refused.
"""

from __future__ import annotations

import argparse

from chimeraseg.data.splits import read_class_names
from chimeraseg.utils.tool_parser import tool_parser

EXAMPLES = (
    "python tools/export_onnx.py --config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml "
    "--output export/ MODEL.WEIGHTS output/demo/train/model_final.pth",
    "python tools/export_onnx.py --config-file "
    "configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml --output export/ --int8 "
    "--vocabulary 'grass,sky,water' --unseen water "
    "MODEL.WEIGHTS output/coco-stuff-164k-156/chimeraseg_mitb4_80k/model_final.pth",
)


def get_parser() -> argparse.ArgumentParser:
    parser = tool_parser("Export Chimera-Seg to ONNX", EXAMPLES)
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="the trained model's config"
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="export folder (new or empty)"
    )
    parser.add_argument("--int8", action="store_true", help="also an int8 (dynamic) image graph")
    parser.add_argument("--vocabulary", help='bake these names into segmenter.onnx: "a,b,c"')
    parser.add_argument("--vocabulary-file", metavar="FILE", help="the baked names, one a line")
    parser.add_argument("--unseen", help='names of the baked vocabulary that receive gamma "a,b"')
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="export without MODEL.WEIGHTS (an untrained student; smoke tests only)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    if args.vocabulary is not None and args.vocabulary_file:
        raise SystemExit("tools/export_onnx.py: give --vocabulary or --vocabulary-file, not both")
    vocabulary = _names(args.vocabulary)
    if args.vocabulary_file:
        try:
            vocabulary = read_class_names(args.vocabulary_file)
        except (OSError, ValueError) as e:
            raise SystemExit(f"tools/export_onnx.py: --vocabulary-file: {e}") from e
    if vocabulary is not None and not vocabulary:
        raise SystemExit(f"tools/export_onnx.py: --vocabulary {args.vocabulary!r} holds no name")
    try:
        from chimeraseg.d2.export import export_from_config
    except ImportError as e:
        raise SystemExit(f"tools/export_onnx.py: building the model needs detectron2 ({e})") from e
    opts = list(args.opts)
    if args.allow_random_weights:
        opts += ["MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS", "True"]
    try:
        meta = export_from_config(
            args.config_file, opts, args.output, vocabulary, _names(args.unseen), args.int8
        )
    except ValueError as e:  # ExportError and bad vocabularies: one line naming the value
        raise SystemExit(f"tools/export_onnx.py: {e}") from e
    for name in sorted(meta.files):
        print(f"wrote {args.output}/{name}")
    print(f"wrote {args.output}/metadata.json (model {meta.model_id[:12]}, opset {meta.opset})")


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/export_onnx.py")
