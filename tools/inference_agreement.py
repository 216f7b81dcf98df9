#!/usr/bin/env python
"""How far an inference option moves a trained model's predictions from exact float32.

Runs one trained checkpoint on the test set twice per option, as the evaluation does (the
detectron2 test loader, the meta-architecture, the evaluator's γ rule), and prints per option the
pixel agreement of the biased argmax with float32 and the sIoU / uIoU / hIoU of both:

    python tools/inference_agreement.py \\
        --config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml \\
        --option "TEST.AMP.ENABLED True" --option "TEST.CSH_DOWNSAMPLE 2" \\
        MODEL.WEIGHTS output/demo/train/model_final.pth

The option ``sem_seg_postprocess`` replaces the one-pass resize of the logits by detectron2's
post-processing (upsample to the padded input, crop, resize again), the difference users see when
comparing with detectron2-based codebases; it shows only where ``INPUT.MIN_SIZE_TEST`` resizes
(e.g. ``INPUT.MIN_SIZE_TEST 128`` among the common overrides).

The agreement is counted over the pixels with a ground-truth label (255 excluded).
"""

from __future__ import annotations

# First, before detectron2: chimeraseg.d2 imports detectron2's modules without their import-time
# warnings (chimeraseg.utils.tool_parser.quiet_import_warnings).
import chimeraseg.d2  # noqa: F401, I001

# isort: split

import argparse
import json
import shlex
from unittest import mock

import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

import chimeraseg.d2.meta_arch as meta_arch
from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator
from chimeraseg.d2.trainer import ChimeraSegTrainer, load_trained_weights
from chimeraseg.d2.world_clip import fill_world_clip
from chimeraseg.data.io import read_label
from chimeraseg.evaluation.gamma_sweep import biased_argmax
from chimeraseg.utils.tool_parser import tool_parser

EXAMPLES = (
    "python tools/inference_agreement.py --config-file "
    "configs/synthetic/chimeraseg_mitb0_synthetic.yaml --option 'TEST.AMP.ENABLED True' "
    "MODEL.WEIGHTS output/demo/train/model_final.pth",
)

METRICS = ("mIoU", "sIoU", "uIoU", "hIoU")
D2_POSTPROCESS = "sem_seg_postprocess"  # the option that swaps in detectron2's post-processing


def two_pass_resize(
    logits: torch.Tensor,
    input_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
) -> torch.Tensor:
    """detectron2's path: ``(N, h, w)`` -> padded input size -> crop -> ``(N, H, W)``."""
    from detectron2.modeling.postprocessing import sem_seg_postprocess

    full = F.interpolate(logits[None], size=input_size, mode="bilinear", align_corners=False)
    return sem_seg_postprocess(full[0], image_size, *output_size)


def predictions(cfg, dataset: str) -> tuple[list[torch.Tensor], list[str], dict[str, float]]:
    """Biased-argmax label maps ``(H, W)`` per image, their label files, the evaluator's metrics."""
    fill_world_clip(cfg)  # the world CLIP of a world-CLIP config, as training used it
    model = build_model(cfg).eval()
    load_trained_weights(model, cfg)
    loader = ChimeraSegTrainer.build_test_loader(cfg, dataset)
    evaluator = ZeroShotSemSegEvaluator(
        dataset, distributed=False, gamma=cfg.TEST.GAMMA, gamma_sweep=[]
    )
    evaluator.reset()
    labels, files = [], []
    with torch.inference_mode():
        for inputs in loader:
            outputs = model(inputs)
            evaluator.process(inputs, outputs)
            files += [x["sem_seg_file_name"] for x in inputs]
            for out in outputs:
                logits = out["sem_seg"]  # (N, H, W) float32
                labels.append(biased_argmax(logits, model.unseen_mask, cfg.TEST.GAMMA))
    metrics = evaluator.evaluate()["sem_seg"]
    return labels, files, {k: metrics[k] for k in METRICS}


def labelled_pixels(files: list[str], dataset: str) -> list[torch.Tensor]:
    """``(H, W)`` bool per label file: the pixels with a ground-truth class."""
    meta = MetadataCatalog.get(dataset)
    num_classes, ignore = len(meta.stuff_classes), meta.ignore_label
    labels = [read_label(f, num_classes, ignore_label=ignore) for f in files]  # (H, W) each
    return [torch.from_numpy(label != ignore) for label in labels]


def compare(config_file: str, opts: list[str], options: list[str]) -> list[dict]:
    """Rows ``{option, agreement, <metric>, <metric>_exact}`` for every option."""
    cfg = get_chimeraseg_cfg(config_file, opts)
    dataset = cfg.DATASETS.TEST[0]
    exact, files, exact_metrics = predictions(cfg, dataset)
    valid = labelled_pixels(files, dataset)
    total = sum(int(v.sum()) for v in valid)
    rows = []
    for option in options:
        if option == D2_POSTPROCESS:
            with mock.patch.object(meta_arch, "resize_logits", two_pass_resize):
                other, _, metrics = predictions(cfg, dataset)
        else:
            extra = shlex.split(option)
            other, _, metrics = predictions(get_chimeraseg_cfg(config_file, opts + extra), dataset)
        same = sum(int(((a == b) & v).sum()) for a, b, v in zip(exact, other, valid))
        row = {"option": option, "agreement": 100.0 * same / total}
        row.update({k: metrics[k] for k in METRICS})
        row.update({f"{k}_exact": exact_metrics[k] for k in METRICS})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="the trained model's config"
    )
    parser.add_argument(
        "--option",
        action="append",
        required=True,
        help=f'overrides, e.g. "TEST.AMP.ENABLED True", or "{D2_POSTPROCESS}"',
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="common overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    rows = compare(args.config_file, list(args.opts), args.option)
    if args.json:
        print(json.dumps(rows, indent=2))
    for r in rows:
        deltas = " / ".join(f"{r[k]:.2f} ({r[k] - r[k + '_exact']:+.2f})" for k in METRICS)
        print(f"{r['option']}: argmax agreement {r['agreement']:.2f}%; mIoU / sIoU / uIoU / hIoU "
              f"{deltas} against the default inference")  # fmt: skip
    return 0


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/inference_agreement.py")
