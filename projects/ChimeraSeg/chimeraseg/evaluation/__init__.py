"""Zero-shot segmentation metrics (plain PyTorch/NumPy, no detectron2).

- :mod:`.metrics`: ``confusion_matrix`` (rows = ground truth) and ``zero_shot_metrics``
  (mIoU, fwIoU, mACC, pACC, sIoU, uIoU, hIoU, per-class IoU/ACC, in percent; paper eq. 7,
  docs/METHOD.md 'Metrics').
- :mod:`.gamma_sweep`: the unseen-logit bias γ for many values in one pass.
- :mod:`.report`: flat result dicts, JSON and tables; :mod:`.plots`: figures (matplotlib);
  :mod:`.offline`: folders of prediction PNGs. The detectron2 evaluator is
  :class:`chimeraseg.d2.evaluator.ZeroShotSemSegEvaluator`.
"""

from chimeraseg.evaluation.gamma_sweep import (
    GammaSweepAccumulator,
    biased_argmax,
    sweep_confusion,
    unseen_class_mask,
)
from chimeraseg.evaluation.metrics import confusion_matrix, per_class_iou, zero_shot_metrics

__all__ = [
    "GammaSweepAccumulator",
    "biased_argmax",
    "confusion_matrix",
    "per_class_iou",
    "sweep_confusion",
    "unseen_class_mask",
    "zero_shot_metrics",
]
