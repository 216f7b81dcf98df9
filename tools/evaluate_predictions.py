#!/usr/bin/env python
"""Offline zero-shot evaluation of a folder of prediction PNGs (no model, no detectron2).

Predictions are label maps (class ids ``0..N-1``) named like the ground-truth files, e.g. the
``predictions/`` folder written by ``ZeroShotSemSegEvaluator(write_predictions=True)``. The class
table and the seen/unseen partition come from a named split, or from a vocabulary file plus the
unseen ids. Prints a per-class table and sIoU / uIoU / hIoU, and writes the metrics as JSON.

Examples::

    python tools/evaluate_predictions.py --pred-dir output/inference/predictions \\
        --gt-dir datasets/coco/stuffthingmaps_detectron2/val2017 --split coco_stuff_171
    python tools/evaluate_predictions.py --pred-dir preds --gt-dir labels \\
        --vocabulary-file names.txt --unseen 3,7 --output-json metrics.json
    # the ONNX demo's labels against the PyTorch demo's (tools/demo.py --save-labels)
    python tools/evaluate_predictions.py --pred-dir out_onnx --reference-dir out_torch \\
        --pred-suffix _labels --gt-dir labels --split coco_stuff_171

With ``--reference-dir`` the JSON also holds ``agreement``: the share of labelled pixels where
the predictions and the reference predictions give the same class.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from chimeraseg.evaluation.metrics import zero_shot_metrics
from chimeraseg.evaluation.offline import evaluate_prediction_folder, prediction_agreement
from chimeraseg.evaluation.plots import plot_per_class_iou
from chimeraseg.evaluation.report import format_table, write_json
from chimeraseg.utils.tool_parser import add_deprecated_alias, tool_parser

EXAMPLES = (
    "python tools/evaluate_predictions.py --pred-dir output/inference/predictions "
    "--gt-dir datasets/coco/stuffthingmaps_detectron2/val2017 --split coco_stuff_171",
    "python tools/evaluate_predictions.py --pred-dir preds --gt-dir labels "
    "--vocabulary-file names.txt --unseen 3,7 --output-json metrics.json",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = tool_parser(__doc__.split("\n\n")[0], EXAMPLES)
    parser.add_argument("--pred-dir", required=True, help="folder of prediction PNGs")
    parser.add_argument("--gt-dir", required=True, help="folder of prepared ground-truth PNGs")
    parser.add_argument(
        "--pred-suffix",
        default="",
        help="what prediction names add to the ground-truth stem (tools/demo.py: _labels)",
    )
    parser.add_argument(
        "--reference-dir",
        default=None,
        help="reference predictions named like --pred-dir's: also report the pixel agreement",
    )
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument(
        "--split", help="named split of chimeraseg.data.splits, e.g. coco_stuff_171"
    )
    classes.add_argument(
        "--vocabulary-file", metavar="FILE", help="class names, one a line (ids 0..N-1)"
    )
    add_deprecated_alias(classes, "--class-names-file", "--vocabulary-file")
    parser.add_argument("--split-variant", default=None, help="variant of --split (e.g. cascade)")
    parser.add_argument(
        "--unseen", default=None, help="with --vocabulary-file: comma-separated unseen class ids"
    )
    parser.add_argument(
        "--output-json", default=None, metavar="FILE",
        help="metrics JSON (default: <pred-dir>/metrics.json)",
    )  # fmt: skip
    parser.add_argument(
        "--output-plot", default=None, metavar="FILE", help="optional per-class IoU bar chart PNG"
    )
    add_deprecated_alias(parser, "--output", "--output-json")
    add_deprecated_alias(parser, "--plot", "--output-plot")
    return parser.parse_args(argv)


def _class_table(args: argparse.Namespace) -> tuple[list[str], list[int], list[int]]:
    """``(class_names, seen_ids, unseen_ids)`` from ``--split`` or the names file + ``--unseen``."""
    if args.split:
        if args.unseen is not None:
            raise SystemExit("--unseen is only used with --vocabulary-file; --split defines it")
        from chimeraseg.data.splits import get_split  # lazy: the offline path needs no data code

        split = get_split(args.split, args.split_variant)
        return list(split.class_names), list(split.seen), list(split.unseen)
    from chimeraseg.data.splits import read_class_names  # the project's one name-file reader

    try:
        names = read_class_names(args.vocabulary_file)  # skips blank and '# comment' lines
    except (OSError, ValueError) as e:
        raise SystemExit(f"--vocabulary-file: {e}") from None
    try:
        unseen = [int(v) for v in args.unseen.split(",") if v.strip()] if args.unseen else []
    except ValueError as e:
        raise SystemExit(f"--unseen must be comma-separated integers, got {args.unseen!r}") from e
    bad = [u for u in unseen if not 0 <= u < len(names)]
    if bad:
        raise SystemExit(f"--unseen ids {bad} are outside [0, {len(names)})")
    seen = [i for i in range(len(names)) if i not in set(unseen)]
    return names, seen, unseen


def _refuse_overwriting_inputs(args: argparse.Namespace, outputs: list[str | None]) -> None:
    """Exits naming the file when an output would replace an input (a PNG or the names file)."""
    inputs = {os.path.realpath(p) for p in (args.vocabulary_file,) if p}
    for folder in (args.pred_dir, args.gt_dir, args.reference_dir):
        if folder is None:
            continue
        if os.path.isdir(folder):
            inputs |= {os.path.realpath(os.path.join(folder, f)) for f in os.listdir(folder)}
    for output in outputs:
        if output and os.path.realpath(output) in inputs:
            raise SystemExit(f"evaluate_predictions: error: output {output} is one of the inputs")


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    names, seen, unseen = _class_table(args)
    output = args.output_json or os.path.join(args.pred_dir, "metrics.json")
    _refuse_overwriting_inputs(args, [output, args.output_plot])
    conf, num_images = evaluate_prediction_folder(
        args.pred_dir, args.gt_dir, len(names), args.pred_suffix
    )
    metrics = zero_shot_metrics(conf, seen, unseen, names)
    print(format_table(metrics, names, seen, unseen))
    print(f"images: {num_images}")
    extra = {}
    if args.reference_dir:
        agreeing, labelled = prediction_agreement(
            args.pred_dir, args.reference_dir, args.gt_dir, len(names), args.pred_suffix
        )
        extra = {"reference_dir": args.reference_dir, "agreement": agreeing / max(labelled, 1),
                 "agreeing_pixels": agreeing, "labelled_pixels": labelled}  # fmt: skip
        print(f"agreement with {args.reference_dir}: {100 * extra['agreement']:.3f}% "
              f"of {labelled} labelled pixels")  # fmt: skip
    write_json(
        output,
        {
            "pred_dir": args.pred_dir,
            "gt_dir": args.gt_dir,
            "num_images": num_images,
            "class_names": names,
            "seen_classes": seen,
            "unseen_classes": unseen,
            "metrics": metrics,
            "confusion_matrix": conf.tolist(),
            **extra,
        },
    )
    print(f"wrote {output}")
    if args.output_plot:
        plot_per_class_iou(metrics, names, seen, unseen, args.output_plot)
    return metrics


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/evaluate_predictions.py")
