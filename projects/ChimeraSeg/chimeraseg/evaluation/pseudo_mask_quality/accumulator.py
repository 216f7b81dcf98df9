"""Accumulation of the pseudo-mask quality counts of one setting over a dataset."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from chimeraseg.evaluation.pseudo_mask_quality import metrics


def _nanmean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN when there is none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass
class QualityAccumulator:
    """Sums the per-image counts of one pseudo-mask setting over a dataset.

    Attributes:
        class_names: ``N`` dataset class names.
        seen_ids: the ``Ns`` seen dataset ids (training label ``i`` is ``seen_ids[i]``).
        unseen_ids: the ``Nu`` unseen dataset ids.
        latent_start: first latent label of the pseudo masks.
    """

    class_names: Sequence[str]
    seen_ids: Sequence[int]
    unseen_ids: Sequence[int]
    latent_start: int
    hidden: int = 0
    covered: int = 0
    coverable: int = 0
    one_region_majority: int = 0
    covered_unseen_label: int = 0
    sizes: list[np.ndarray] = field(default_factory=list)
    majority: list[np.ndarray] = field(default_factory=list)
    regions_per_image: list[int] = field(default_factory=list)
    tp: np.ndarray | None = None
    fp: np.ndarray | None = None
    fn: np.ndarray | None = None

    def update(
        self,
        pseudo: torch.Tensor,
        true: torch.Tensor,
        num_latent: int,
        coverable: torch.Tensor | None = None,
    ) -> None:
        """Adds one image.

        Args:
            pseudo: ``(H, W)`` long pseudo labels.
            true: ``(H, W)`` long ground truth in dataset ids.
            num_latent: latent regions of the image.
            coverable: ``(H, W)`` bool, pixels of ignore-region teacher cells (the only pixels
                that can get a label); None = every pixel.
        """
        ns, unseen = len(self.seen_ids), self.unseen_ids
        hidden, covered, by_unseen = metrics.coverage_counts(
            pseudo, true, unseen, ns, self.latent_start
        )
        in_reach = (
            metrics._isin(true, unseen)
            if coverable is None
            else metrics._isin(true, unseen) & coverable
        )
        self.coverable += int(in_reach.sum())
        self.one_region_majority += metrics.one_region_purity_counts(
            true, unseen, len(self.class_names)
        )[1]
        self.hidden += hidden
        self.covered += covered
        self.covered_unseen_label += by_unseen
        sizes, majority = metrics.region_purity_counts(
            pseudo, true, self.latent_start, len(self.class_names)
        )
        self.sizes.append(sizes)
        self.majority.append(majority)
        self.regions_per_image.append(int(num_latent))
        if self.latent_start > ns:  # transductive: unseen labels exist
            counts = metrics.unseen_label_counts(pseudo, true, unseen, ns)
            if self.tp is None:
                self.tp, self.fp, self.fn = (np.zeros_like(c) for c in counts)
            self.tp, self.fp, self.fn = (a + c for a, c in zip((self.tp, self.fp, self.fn), counts))

    def summary(self) -> dict[str, Any]:
        """The dataset's numbers (percent; NaN where undefined).

        Returns:
            ``{"images", "hidden_pixels", "coverage", "coverage_latent", "coverage_unseen_label",
            "coverage_ceiling", "purity_weighted", "purity_unweighted", "purity_one_region",
            "regions", "regions_per_image", "max_regions_per_image"}`` and, transductive,
            ``"unseen"`` (per class name: ``{"precision", "recall", "iou"}``),
            ``"unseen_precision"``, ``"unseen_recall"``, ``"unseen_iou"`` (means over the classes
            where defined).
        """
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int64)
        majority = np.concatenate(self.majority) if self.majority else np.zeros(0, np.int64)
        weighted, unweighted = metrics.purity_summary(sizes, majority)
        share = (lambda n: 100.0 * n / self.hidden) if self.hidden else (lambda n: math.nan)
        out: dict[str, Any] = {
            "images": len(self.regions_per_image),
            "hidden_pixels": self.hidden,
            "coverage": share(self.covered),
            "coverage_latent": share(self.covered - self.covered_unseen_label),
            "coverage_unseen_label": share(self.covered_unseen_label),
            "coverage_ceiling": share(self.coverable),
            "purity_weighted": weighted,
            "purity_unweighted": unweighted,
            "purity_one_region": share(self.one_region_majority),
            "regions": int(sum(self.regions_per_image)),
            "regions_per_image": _nanmean([float(np.mean(self.regions_per_image or [math.nan]))]),
            "max_regions_per_image": max(self.regions_per_image, default=0),
        }
        if self.tp is not None:
            precision, recall, iou = metrics.precision_recall_iou(self.tp, self.fp, self.fn)
            names = [self.class_names[i] for i in self.unseen_ids]
            out["unseen"] = {
                n: {"precision": p, "recall": r, "iou": i}
                for n, p, r, i in zip(names, precision, recall, iou)
            }
            out["unseen_precision"] = _nanmean(precision)
            out["unseen_recall"] = _nanmean(recall)
            out["unseen_iou"] = _nanmean(iou)
        return out
