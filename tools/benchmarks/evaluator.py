"""Section 4: evaluator throughput, ChimeraSeg's vs detectron2's, on the same predictions.

Both evaluators get the same ``inputs``/``outputs`` lists (``(171, S, S)`` float logits per image)
and read the same uint8 ground-truth PNGs from a temporary directory, as they do in training.
Timed: ``reset()`` + ``process()`` over all images (``evaluate()`` is a one-off per run and is
excluded), the evaluators interleaved round by round (median over rounds). Equal results are
checked: mIoU at γ = 0 of both evaluators must agree.

detectron2's ``SemSegEvaluator.process`` also computes boundary IoU (on by default for fewer than
255 classes) and RLE-encodes every prediction for JSON; both are part of what a user pays, but the
table also shows it with boundary IoU switched off (``_compute_boundary_iou = False``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.clip_setup import NUM_COCO_STUFF_CLASSES
from benchmarks.measure import interleaved

DATASET_NAME = "chimeraseg_benchmark_eval"


def _make_predictions(
    root: Path, num_images: int, size: int, num_classes: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Writes ground-truth PNGs and returns detectron2-style ``inputs`` and ``outputs``."""
    gen = torch.Generator().manual_seed(seed)
    inputs, outputs = [], []
    for i in range(num_images):
        gt = torch.randint(0, num_classes, (size, size), generator=gen)
        gt[torch.rand(size, size, generator=gen) < 0.1] = 255  # 10% ignore pixels
        gt_file = root / f"{i:04d}.png"
        Image.fromarray(gt.numpy().astype(np.uint8)).save(gt_file)
        # logits correlated with gt so the confusion matrix is not degenerate
        logits = torch.randn(num_classes, size, size, generator=gen)
        logits.scatter_add_(
            0, gt.clamp(max=num_classes - 1)[None], torch.full((1, size, size), 3.0)
        )
        inputs.append({"file_name": f"image_{i:04d}.jpg", "sem_seg_file_name": str(gt_file)})
        outputs.append({"sem_seg": logits})
    return inputs, outputs


def _register(inputs: list[dict[str, Any]], num_classes: int) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if DATASET_NAME in DatasetCatalog.list():
        DatasetCatalog.remove(DATASET_NAME)
        MetadataCatalog.remove(DATASET_NAME)
    DatasetCatalog.register(DATASET_NAME, lambda: inputs)
    unseen = list(range(0, num_classes, 11))  # any split: timing only
    MetadataCatalog.get(DATASET_NAME).set(
        stuff_classes=[f"class {i}" for i in range(num_classes)],
        seen_classes=[i for i in range(num_classes) if i not in unseen],
        unseen_classes=unseen,
        ignore_label=255,
        evaluator_type="zs_sem_seg",
    )


def _reset_and_process(evaluator: Any, inputs, outputs):
    """The timed work of one evaluator: ``reset()`` then ``process()`` over all images."""

    def run() -> None:
        evaluator.reset()
        evaluator.process(inputs, outputs)

    return run


def run_evaluator(args: argparse.Namespace) -> dict[str, Any]:
    """Pixels/s of ``ZeroShotSemSegEvaluator`` vs detectron2's ``SemSegEvaluator``."""
    try:
        from detectron2.evaluation import SemSegEvaluator

        from chimeraseg.d2.evaluator import ZeroShotSemSegEvaluator
        from chimeraseg.evaluation.report import DEFAULT_GAMMA_SWEEP
    except ImportError as e:
        return {"skipped": f"detectron2 (or chimeraseg.d2.evaluator) not importable: {e}"}
    logging.getLogger("detectron2").setLevel(logging.ERROR)  # d2 warns about boundary IoU
    n, size = args.eval_images, args.size
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = _make_predictions(Path(tmp), n, size, NUM_COCO_STUFF_CLASSES, args.seed)
        _register(inputs, NUM_COCO_STUFF_CLASSES)
        evaluators = {
            "chimeraseg_sweep": ZeroShotSemSegEvaluator(DATASET_NAME, distributed=False),
            "chimeraseg_single_gamma": ZeroShotSemSegEvaluator(
                DATASET_NAME, distributed=False, gamma_sweep=[]
            ),
            "detectron2": SemSegEvaluator(DATASET_NAME, distributed=False),
            "detectron2_no_boundary": SemSegEvaluator(DATASET_NAME, distributed=False),
        }
        evaluators["detectron2_no_boundary"]._compute_boundary_iou = False
        runs = {name: _reset_and_process(ev, inputs, outputs) for name, ev in evaluators.items()}
        rounds = interleaved(runs, torch.device("cpu"), args.warmup, args.repeats)
        results: dict[str, Any] = {}
        for name, ev in evaluators.items():
            seconds = statistics.median(rounds[name])
            results[name] = {"median_s": seconds, "pixels_per_s": n * size * size / seconds}
            results[name] |= {"rounds_s": rounds[name]}
            results[name]["mIoU"] = float(ev.evaluate()["sem_seg"]["mIoU"])
    ref = results["detectron2"]
    for r in results.values():
        r["ratio_vs_detectron2"] = r["pixels_per_s"] / ref["pixels_per_s"]
        r["ratio_vs_detectron2_no_boundary"] = (
            r["pixels_per_s"] / results["detectron2_no_boundary"]["pixels_per_s"]
        )
    miou = [r["mIoU"] for r in results.values()]
    return {
        "images": n,
        "size": size,
        "num_classes": NUM_COCO_STUFF_CLASSES,
        "evaluators": results,
        "equal_mIoU": max(miou) - min(miou) <= 1e-6,
        "sweep_gammas": sorted({0.0, *DEFAULT_GAMMA_SWEEP}),
    }
