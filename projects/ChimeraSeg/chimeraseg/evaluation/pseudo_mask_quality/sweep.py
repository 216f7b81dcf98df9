"""Pseudo masks as training computes them, their quality over a dataset, and the sweep.

The frozen CLIP teacher runs once per dense path (:func:`teacher_dense_features`); each image's
labels are hidden and padded to the teacher grid and passed to
:func:`chimeraseg.modeling.pseudo_masks.generate_pseudo_masks` (:func:`evaluate_pseudo_masks`);
:func:`sweep` does this for every mode x dense path x window-scale set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.clip.teacher import CLIPTeacher
from chimeraseg.evaluation.pseudo_mask_quality.accumulator import QualityAccumulator
from chimeraseg.evaluation.pseudo_mask_quality.data import Sample, hide_unseen
from chimeraseg.evaluation.pseudo_mask_quality.metrics import IGNORE_LABEL
from chimeraseg.modeling.pseudo_masks import (
    PseudoMaskConfig,
    cell_fraction,
    generate_pseudo_masks,
)


@torch.no_grad()
def teacher_dense_features(teacher: CLIPTeacher, samples: Sequence[Sample]) -> list[torch.Tensor]:
    """Teacher dense features of every sample.

    Returns:
        One ``(1, D, ceil(H/16), ceil(W/16))`` tensor per sample.
    """
    return [teacher(s.image[None]).dense for s in samples]


def _pseudo_masks_of(
    sample: Sample,
    dense: torch.Tensor,
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    config: PseudoMaskConfig,
    mode: str,
    text: tuple[torch.Tensor, torch.Tensor] | None,
    patch_size: int,
) -> tuple[torch.Tensor, int, int, torch.Tensor]:
    """Pseudo masks of one image as training computes them.

    The labels are padded bottom/right to the teacher grid (``patch_size`` times ``(h', w')``, as
    the teacher pads the image) with ignore and ``valid = False``, so padding never forms a region.

    Returns:
        ``(H, W)`` long pseudo labels, the number of latent regions, the latent start and the
        ``(H, W)`` bool pixels of the ignore-region cells (the region rule of the generator).
    """
    labels = hide_unseen(sample.true, seen_ids, unseen_ids)  # (H, W)
    h, w = labels.shape
    gh, gw = dense.shape[-2:]
    pad = (0, gw * patch_size - w, 0, gh * patch_size - h)
    if min(pad) < 0 or max(pad[1], pad[3]) >= patch_size:
        raise ValueError(
            f"teacher grid {(gh, gw)} does not match a {(h, w)} image with "
            f"{patch_size}-pixel patches"
        )
    padded = F.pad(labels, pad, value=IGNORE_LABEL)[None]  # (1, H', W')
    valid = F.pad(torch.ones(h, w, dtype=torch.bool), pad, value=False)[None]
    out = generate_pseudo_masks(
        padded,
        dense,
        num_seen=len(seen_ids),
        mode=mode,
        seen_text=text[0] if text is not None else None,
        unseen_text=text[1] if text is not None else None,
        config=config,
        valid=valid,
    )
    region = _region_pixels(padded == IGNORE_LABEL, valid, (gh, gw), config)[0, :h, :w]
    return out.labels[0, :h, :w], int(out.num_latent[0]), out.latent_start, region


def _region_pixels(
    ignore: torch.Tensor, valid: torch.Tensor, grid: tuple[int, int], config: PseudoMaskConfig
) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels of the teacher cells that form the ignore region, by the rule of
    :func:`~chimeraseg.modeling.pseudo_masks.generate_pseudo_masks` (enough valid ignore pixels,
    at least half of the cell valid)."""
    fraction = cell_fraction(ignore & valid, grid)  # (B, h', w')
    cells = (fraction >= config.region_ignore_fraction) & (fraction > 0)
    cells &= cell_fraction(valid, grid) >= 0.5
    pixels = F.interpolate(cells[:, None].float(), size=ignore.shape[-2:], mode="nearest")
    return pixels[:, 0].bool()


def evaluate_pseudo_masks(
    samples: Sequence[Sample],
    dense: Sequence[torch.Tensor],
    *,
    class_names: Sequence[str],
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    config: PseudoMaskConfig | None = None,
    mode: str = "inductive",
    text: torch.Tensor | None = None,
    patch_size: int = 16,
) -> dict[str, Any]:
    """Pseudo-mask quality of one setting over a dataset.

    Args:
        samples: images with full ground truth.
        dense: teacher features of ``samples`` (:func:`teacher_dense_features`).
        class_names: ``N`` dataset class names.
        seen_ids: seen dataset ids.
        unseen_ids: unseen dataset ids.
        config: pseudo-mask knobs (defaults when None).
        mode: ``"inductive"`` or ``"transductive"``.
        text: ``(N, D)`` class text embeddings (transductive only).
        patch_size: the teacher's patch side: cell ``(i, j)`` covers pixels
            ``[p i, p i + p) x [p j, p j + p)``.

    Returns:
        :meth:`QualityAccumulator.summary`.
    """
    config = config or PseudoMaskConfig()
    pair = None
    if mode == "transductive":
        if text is None:
            raise ValueError("evaluate_pseudo_masks: the transductive mode needs text (N, D)")
        pair = (text[list(seen_ids)], text[list(unseen_ids)])
    acc = None
    for sample, features in zip(samples, dense):
        pseudo, num_latent, latent_start, coverable = _pseudo_masks_of(
            sample, features, seen_ids, unseen_ids, config, mode, pair, patch_size
        )
        if acc is None:
            acc = QualityAccumulator(class_names, seen_ids, unseen_ids, latent_start)
        acc.update(pseudo, sample.true, num_latent, coverable)
    if acc is None:
        raise ValueError("evaluate_pseudo_masks: no samples")
    return acc.summary()


def sweep(
    clip_model: nn.Module,
    samples: Sequence[Sample],
    *,
    class_names: Sequence[str],
    seen_ids: Sequence[int],
    unseen_ids: Sequence[int],
    scale_sets: Sequence[Sequence[int]],
    dense_paths: Sequence[str] = ("value_ffn",),
    modes: Sequence[str] = ("inductive",),
    base_config: PseudoMaskConfig | None = None,
    text: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Every mode x dense path x scale set; the teacher runs once per dense path.

    Args:
        clip_model: open_clip CLIP (or its visual tower).
        samples: images with full ground truth.
        class_names: ``N`` dataset class names.
        seen_ids: seen dataset ids.
        unseen_ids: unseen dataset ids.
        scale_sets: window-scale sets, e.g. ``[(2, 4, 8), (4, 8)]``.
        dense_paths: teacher dense paths (``"value_ffn"``, ``"value"``).
        modes: ``"inductive"`` and/or ``"transductive"``.
        base_config: the other pseudo-mask knobs (defaults when None).
        text: ``(N, D)`` class text embeddings (needed for transductive).

    Returns:
        One row per combination: ``{"mode", "dense_path", "scales"}`` plus the summary.
    """
    base = base_config or PseudoMaskConfig()
    rows = []
    for path in dense_paths:
        teacher = CLIPTeacher(clip_model, dense_path=path)
        dense = teacher_dense_features(teacher, samples)
        for mode in modes:
            for scales in scale_sets:
                config = replace(base, scales=tuple(int(s) for s in scales))
                summary = evaluate_pseudo_masks(
                    samples, dense, class_names=class_names, seen_ids=seen_ids,
                    unseen_ids=unseen_ids, config=config, mode=mode, text=text,
                    patch_size=teacher.patch_size,
                )  # fmt: skip
                rows.append({"mode": mode, "dense_path": path, "scales": config.scales, **summary})
    return rows
