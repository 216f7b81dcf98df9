"""Quality of the pseudo masks Ỹ against the full ground truth (no detectron2).

On a dataset whose labels still hold the unseen classes, measures how well the training-time
pseudo masks (:func:`chimeraseg.modeling.pseudo_masks.generate_pseudo_masks`) label the hidden
pixels: coverage and its ceiling, purity and the one-region reference, regions per image and,
transductively, precision / recall / IoU of each unseen label; all in percent, pixel counts summed
over the dataset before dividing. The definitions are in docs/PSEUDO_MASKS.md.

Modules (everything public is re-exported here): :mod:`.metrics` (counts of one label map pair),
:mod:`.accumulator` (sums over a dataset), :mod:`.data` (samples and the training rule),
:mod:`.sweep` (several window-scale sets and teacher dense paths, one teacher run per path),
:mod:`.report` (table and recommendation).
"""

from chimeraseg.evaluation.pseudo_mask_quality.accumulator import QualityAccumulator
from chimeraseg.evaluation.pseudo_mask_quality.data import Sample, hide_unseen, load_samples
from chimeraseg.evaluation.pseudo_mask_quality.metrics import (
    coverage_counts,
    one_region_purity_counts,
    precision_recall_iou,
    purity_summary,
    region_purity_counts,
    unseen_label_counts,
)
from chimeraseg.evaluation.pseudo_mask_quality.report import format_sweep_table, recommend
from chimeraseg.evaluation.pseudo_mask_quality.sweep import (
    evaluate_pseudo_masks,
    sweep,
    teacher_dense_features,
)

__all__ = [
    "QualityAccumulator",
    "Sample",
    "coverage_counts",
    "evaluate_pseudo_masks",
    "format_sweep_table",
    "hide_unseen",
    "load_samples",
    "one_region_purity_counts",
    "precision_recall_iou",
    "purity_summary",
    "recommend",
    "region_purity_counts",
    "sweep",
    "teacher_dense_features",
    "unseen_label_counts",
]
