"""detectron2 evaluator for generalized zero-shot semantic segmentation with a one-pass γ sweep.

The model returns unbiased logits; this evaluator adds γ to the unseen classes for every γ of
the sweep at once (:mod:`chimeraseg.evaluation.gamma_sweep`), accumulates the confusion
matrices on the logits' device, sums them over processes and reports the metrics of
:mod:`chimeraseg.evaluation.metrics` (docs/METHOD.md, 'Metrics'). Evaluation is always
generalized: all classes of the vocabulary compete; there is no seen-only or unseen-only
vocabulary mode.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from chimeraseg.d2.data.register_common import zero_shot_metadata
from chimeraseg.data.io import read_label
from chimeraseg.data.prediction_io import write_label_png
from chimeraseg.evaluation.gamma_sweep import GammaSweepAccumulator, biased_argmax
from chimeraseg.evaluation.plots import plot_gamma_sweep, plot_per_class_iou
from chimeraseg.evaluation.report import (
    DEFAULT_GAMMA_SWEEP,
    flat_results,
    summarize_sweep,
    transfer_summary,
    write_json,
)
from chimeraseg.utils.distributed import all_reduce_sum

__all__ = ["ZeroShotSemSegEvaluator"]


class ZeroShotSemSegEvaluator(DatasetEvaluator):
    """sIoU / uIoU / hIoU (and mIoU, fwIoU, mACC, pACC, per-class IoU) for every γ in one pass.

    ``process`` takes ``outputs[i]["sem_seg"]``: ``(N, H, W)`` unbiased logits at the ground
    truth's resolution, on any device; the ground truth is read from
    ``inputs[i]["sem_seg_file_name"]`` (or, as detectron2's mapper drops that key at test time,
    from the dataset dict with the same ``file_name``).

    ``evaluate`` returns ``{"sem_seg": {...}}`` on the main process (None elsewhere, as
    detectron2's evaluators do): the headline γ's metrics under their plain names, ``gamma``,
    and ``sIoU/uIoU/hIoU/mIoU@gamma=<γ>`` for every γ of the sweep (flat floats for
    ``print_csv_format``). A dataset without unseen classes (cross-dataset transfer, e.g.
    ADE20K-847) reports mIoU, fwIoU, mACC, pACC and per-class IoU / accuracy only: no sIoU / uIoU
    / hIoU and no γ. With ``output_dir`` it writes ``metrics.json``, ``per_class_iou.png``,
    ``gamma_sweep.png`` and, if asked, ``predictions/<gt file name>.png`` (headline-γ class ids,
    readable by ``tools/evaluate_predictions.py``).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        gamma: float = 0.0,
        gamma_sweep: Sequence[float] | None = None,
        write_predictions: bool = False,
        max_predictions: int | None = None,
    ) -> None:
        """
        Args:
            dataset_name: a registered dataset with metadata ``stuff_classes``,
                ``seen_classes``, ``unseen_classes`` and ``ignore_label``.
            distributed: sum the confusion matrices over all processes in ``evaluate``.
            output_dir: where files are written (main process only); None = write nothing.
            gamma: headline bias added to the unseen logits (``cfg.TEST.GAMMA``).
            gamma_sweep: further γ evaluated in the same pass (``cfg.TEST.GAMMA_SWEEP``);
                None = ``DEFAULT_GAMMA_SWEEP`` (0.0 ... 1.0), ``[]`` = the headline γ only.
            write_predictions: write headline-γ prediction PNGs to ``output_dir/predictions``.
            max_predictions: at most this many prediction PNGs per process (None = all).
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        meta = zero_shot_metadata(dataset_name)
        self._class_names = list(meta["stuff_classes"])
        self._seen = [int(i) for i in meta["seen_classes"]]
        self._unseen = [int(i) for i in meta["unseen_classes"]]
        self._ignore = int(meta["ignore_label"])
        self._distributed = distributed
        self._output_dir = output_dir
        if write_predictions and not output_dir:
            raise ValueError("write_predictions=True needs an output_dir")
        self._write_predictions = write_predictions
        self._max_predictions = max_predictions
        self._gamma = float(gamma)
        extra = DEFAULT_GAMMA_SWEEP if gamma_sweep is None else gamma_sweep
        if not self._unseen:  # no unseen class (cross-dataset transfer): gamma changes nothing
            extra = []
        self._gammas = sorted({float(g) for g in extra} | {self._gamma})
        self._sweep = GammaSweepAccumulator(
            len(self._class_names), self._unseen, self._gammas, self._ignore
        )
        self._gt_files: dict[str, str] | None = None  # file_name -> sem_seg_file_name, lazily

    @classmethod
    def from_config(
        cls, cfg: Any, dataset_name: str, output_dir: str | None = None
    ) -> ZeroShotSemSegEvaluator:
        """Builds the evaluator from ``cfg.TEST.GAMMA`` and ``cfg.TEST.GAMMA_SWEEP``."""
        return cls(
            dataset_name,
            distributed=True,
            output_dir=output_dir,
            gamma=cfg.TEST.GAMMA,
            gamma_sweep=list(cfg.TEST.GAMMA_SWEEP),
        )

    def reset(self) -> None:
        self._sweep.reset()
        self._num_written = 0

    def _gt_file(self, inp: dict[str, Any]) -> str:
        """The ground-truth file of one input dict."""
        if "sem_seg_file_name" in inp:
            return inp["sem_seg_file_name"]
        if self._gt_files is None:
            self._gt_files = {
                d["file_name"]: d["sem_seg_file_name"]
                for d in DatasetCatalog.get(self._dataset_name)
            }
        if inp.get("file_name") not in self._gt_files:
            raise KeyError(
                f"input {inp.get('file_name')!r} has no 'sem_seg_file_name' and is not an image of "
                f"dataset {self._dataset_name!r}"
            )
        return self._gt_files[inp["file_name"]]

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Accumulates one confusion matrix per γ.

        Args:
            inputs: dataset dicts (``sem_seg_file_name`` or ``file_name``).
            outputs: dicts with ``"sem_seg"``: ``(N, H, W)`` unbiased logits.
        """
        for inp, out in zip(inputs, outputs):
            gt_file = self._gt_file(inp)
            logits = out["sem_seg"]
            gt = read_label(gt_file, len(self._class_names), ignore_label=self._ignore)
            with torch.no_grad():
                self._sweep.update(logits, gt, source=gt_file)
            if self._write_predictions and (
                self._max_predictions is None or self._num_written < self._max_predictions
            ):
                self._save_prediction(logits, gt_file)

    def _save_prediction(self, logits: torch.Tensor, gt_file: str) -> None:
        """Writes the headline-γ prediction as a class-id PNG named like the ground truth."""
        pred = biased_argmax(logits, self._sweep.unseen_mask, self._gamma)  # (H, W)
        path = os.path.join(self._output_dir, "predictions", os.path.basename(gt_file))
        write_label_png(path, pred.to("cpu").numpy(), len(self._class_names))  # 8 or 16 bits
        self._num_written += 1

    def _reduced_confusion(self) -> tuple[torch.Tensor, int]:
        """``(G, N, N)`` confusion and image count, summed over processes if distributed."""
        n, g = len(self._class_names), len(self._gammas)
        conf = self._sweep.conf
        device = conf.device if conf is not None else torch.device("cpu")
        if self._distributed and comm.get_world_size() > 1 and dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        conf = torch.zeros(g, n, n, dtype=torch.long) if conf is None else conf
        conf = conf.to(device)
        count = torch.tensor([self._sweep.num_images], dtype=torch.long, device=device)
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            all_reduce_sum(conf)
            all_reduce_sum(count)
        return conf.cpu(), int(count.item())

    def evaluate(self) -> OrderedDict | None:
        """Sums over processes and returns ``{"sem_seg": flat metrics}`` on the main process."""
        conf, num_images = self._reduced_confusion()
        if self._distributed and not comm.is_main_process():
            return None
        if num_images == 0:
            raise ValueError(f"no image of dataset {self._dataset_name!r} was evaluated")
        if int(conf[0].sum()) == 0:
            raise ValueError(
                f"dataset {self._dataset_name!r}: {num_images} images but every ground-truth "
                f"pixel is ignore ({self._ignore}); nothing to evaluate"
            )
        summary = summarize_sweep(
            conf, self._gammas, self._gamma, self._seen, self._unseen, self._class_names
        )
        if not self._unseen:
            summary = transfer_summary(summary)
        if self._output_dir:
            self._write_outputs(summary, conf, num_images)
        results = flat_results(summary)
        if not self._unseen:
            results.pop("gamma")
            self._logger.info(
                "%s (%d images, no unseen class): mIoU %.2f",
                self._dataset_name, num_images, results["mIoU"],
            )  # fmt: skip
            return OrderedDict({"sem_seg": results})
        self._logger.info(
            "%s (%d images, gamma %.2f): sIoU %.2f uIoU %.2f hIoU %.2f mIoU %.2f",
            self._dataset_name, num_images, self._gamma,
            results["sIoU"], results["uIoU"], results["hIoU"], results["mIoU"],
        )  # fmt: skip
        return OrderedDict({"sem_seg": results})

    def _write_outputs(self, summary: dict[str, Any], conf: torch.Tensor, num_images: int) -> None:
        """``metrics.json``, the per-class IoU bar chart and the γ plot in ``output_dir``."""
        out = self._output_dir
        write_json(
            os.path.join(out, "metrics.json"),
            {
                "dataset": self._dataset_name,
                "num_images": num_images,
                "num_pixels": int(conf[0].sum()),
                "class_names": self._class_names,
                "seen_classes": self._seen,
                "unseen_classes": self._unseen,
                **summary,
            },
        )
        title = f"{self._dataset_name}, gamma = {self._gamma:g}"
        plot_per_class_iou(
            summary["headline"],
            self._class_names,
            self._seen,
            self._unseen,
            os.path.join(out, "per_class_iou.png"),
            title=title,
        )
        if not summary["sweep"]:
            return  # no unseen class: no gamma curve
        curves = {k: [row[k] for row in summary["sweep"]] for k in ("hIoU", "uIoU", "sIoU")}
        plot_gamma_sweep(
            self._gammas,
            curves,
            os.path.join(out, "gamma_sweep.png"),
            headline_gamma=self._gamma,
            title=self._dataset_name,
        )
