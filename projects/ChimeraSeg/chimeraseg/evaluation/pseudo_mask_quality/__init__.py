"""Quality of the pseudo masks Ỹ against the full ground truth (no detectron2).

Training hides the unseen classes (their pixels become ignore, 255) and fills ignore pixels with
latent regions, and transductively with unseen labels, from the frozen CLIP teacher
(:func:`chimeraseg.modeling.pseudo_masks.generate_pseudo_masks`). On a dataset whose labels still
hold the unseen classes, this package measures how well that works:

* **coverage**: share of the hidden pixels (ground truth = an unseen class) that receive a latent
  region or an unseen label (split into the two parts as ``coverage_latent`` and
  ``coverage_unseen_label``);
* **purity**: per latent region, the share of its pixels whose true class is the region's majority
  true class (pixels whose ground truth is itself ignore do not count); reported as the
  pixel-weighted mean over all regions and as the unweighted mean;
* **regions per image**: number of latent regions;
* two references: the **coverage ceiling** (share of hidden pixels inside teacher cells that
  belong to the ignore region, the most any setting can cover at the 16-pixel teacher grid) and
  the **one-region purity** (pixel-weighted purity if each image's hidden pixels formed a single
  region: what purity is worth on images holding only one unseen class);
* transductive: **precision, recall and IoU** of every unseen label (pixels whose ground truth is
  ignore do not count), per unseen class and averaged over the classes with any prediction or
  ground truth.

All numbers are in percent and accumulated over the dataset (pixel counts are summed over images
before dividing). :func:`sweep` evaluates several window-scale sets and teacher dense paths at
once, running the teacher once per dense path.

Modules (everything public is re-exported here):

- :mod:`.metrics`: the counts and percentages of one label map pair;
- :mod:`.accumulator`: :class:`QualityAccumulator`, the sums over a dataset and their summary;
- :mod:`.data`: :class:`Sample`, :func:`load_samples` and :func:`hide_unseen` (the training rule);
- :mod:`.sweep`: :func:`teacher_dense_features`, :func:`evaluate_pseudo_masks`, :func:`sweep`;
- :mod:`.report`: :func:`format_sweep_table` and :func:`recommend`.
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
