"""The training criterion: the paper's three losses with their weights (METHOD.md, 'Total loss').

``L = w_seg·Lseg + w_sgd·Lsgd + w_sam·Lsam``. The model builds the features
(:class:`TrainingOutputs`); the criterion owns the loss weights and loss temperatures, the
Gumbel-noise generator of Selective Global Distillation and the gather flag of SGD and SAM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg import IGNORE_LABEL
from chimeraseg.modeling.losses.segmentation import segmentation_loss
from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation
from chimeraseg.modeling.losses.semantic_alignment import semantic_alignment_loss
from chimeraseg.modeling.prototypes import ImagePrototypes
from chimeraseg.utils.distributed import (
    all_gather_rows,
    get_rank,
    is_distributed,
    mean_count_per_process,
)

__all__ = ["LOSS_NAMES", "PAPER_LOSS_WEIGHTS", "ChimeraSegCriterion", "TrainingOutputs"]

LOSS_NAMES = ("loss_seg", "loss_sgd", "loss_sam")  # log names follow the paper's SGD / SAM
# w_sgd = 1 and w_sam = 0.5 (Table XII's best row; docs/METHOD.md, 'Total loss').
PAPER_LOSS_WEIGHTS: Mapping[str, float] = {"loss_seg": 1.0, "loss_sgd": 1.0, "loss_sam": 0.5}
_PAD_LOGIT = -1.0e4  # logit of absent latent columns: exp(-1e4) == 0, finite under upsampling


@dataclass
class TrainingOutputs:
    """What the model hands to the criterion for one batch.

    Attributes:
        features: ``(B, D, h, w)`` CSH output ``Fc``.
        cls: ``(B, D)`` unit teacher CLS embeddings ``Cg``.
        pseudo_labels: ``(B, H, W)`` pseudo masks (seen, [unseen,] latent labels, 255).
        latent_start: first latent label of ``pseudo_labels``.
        prototypes: per-image prototypes of ``features`` under the downsampled pseudo masks.
        fixed_text: ``(C0, D)`` unit fixed classifier (``As``, or ``cat(As, Au)`` transductive).
        seen_text: ``(Ns, D)`` unit seen text embeddings.
        logit_tau: the model's temperature ``τ`` of the cosine logits.
        valid: ``(B, h, w)`` bool positions SGD may select; None = all.
    """

    features: torch.Tensor
    cls: torch.Tensor
    pseudo_labels: torch.Tensor
    prototypes: list[ImagePrototypes]
    fixed_text: torch.Tensor
    seen_text: torch.Tensor
    logit_tau: float
    valid: torch.Tensor | None = None


class ChimeraSegCriterion(nn.Module):
    """The three Chimera-Seg losses with their weights (Mask2Former's ``SetCriterion`` pattern).

    Args:
        weight_dict: weight per loss name of :data:`LOSS_NAMES` (a missing name keeps its
            :data:`PAPER_LOSS_WEIGHTS` value; 0 skips the loss, then returned as an exact 0).
        global_distillation: the SGD loss module; None disables it.
        sam_tau_f: SAM prototype temperature.
        sam_tau_c: SAM text temperature.
        ce_weight: cross-entropy weight inside ``Lseg``.
        focal_weight: focal-loss weight inside ``Lseg``.
        focal_gamma: focal ``γ``.
        gather_across_processes: SGD and SAM use every process's CLS tokens as negatives.
        seed: seed of the Gumbel-noise generator (offset by the process rank); None = global RNG.
    """

    def __init__(
        self,
        *,
        weight_dict: Mapping[str, float] = PAPER_LOSS_WEIGHTS,
        global_distillation: SelectiveGlobalDistillation | None = None,
        sam_tau_f: float = 0.07,
        sam_tau_c: float = 0.01,
        ce_weight: float = 1.0,
        focal_weight: float = 1.0,
        focal_gamma: float = 2.0,
        gather_across_processes: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(weight_dict) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"ChimeraSegCriterion: weight_dict {unknown} not in {LOSS_NAMES}")
        self.weight_dict = {n: float(weight_dict.get(n, PAPER_LOSS_WEIGHTS[n])) for n in LOSS_NAMES}
        non_negative = {**self.weight_dict, "ce_weight": ce_weight, "focal_weight": focal_weight}
        non_negative["focal_gamma"] = focal_gamma
        positive = {"sam_tau_f": sam_tau_f, "sam_tau_c": sam_tau_c}
        _check_ranges(non_negative, positive)
        self.global_distillation = global_distillation
        self.sam_tau_f, self.sam_tau_c = float(sam_tau_f), float(sam_tau_c)
        self.ce_weight, self.focal_weight = float(ce_weight), float(focal_weight)
        self.focal_gamma = float(focal_gamma)
        self.gather_across_processes = bool(gather_across_processes)
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, outputs: TrainingOutputs, iteration: int) -> dict[str, torch.Tensor]:
        """Weighted losses ``{"loss_seg", "loss_sgd", "loss_sam"}`` (their sum is ``L``).

        Args:
            outputs: the model's features of the batch.
            iteration: training iteration (K schedule of SGD).
        """
        zero = outputs.features.new_zeros((), dtype=torch.float32)
        w = self.weight_dict
        losses = {"loss_seg": w["loss_seg"] * self.segmentation_loss(outputs)}
        losses["loss_sgd"] = zero
        if self.global_distillation is not None and w["loss_sgd"] != 0.0:
            loss = self.global_distillation(
                outputs.features,
                outputs.cls,
                iteration,
                generator=self._generator(outputs.features.device),
                valid=outputs.valid,
                gather=self.gather_across_processes,
            )
            losses["loss_sgd"] = w["loss_sgd"] * loss
        losses["loss_sam"] = zero
        if w["loss_sam"] != 0.0:
            losses["loss_sam"] = w["loss_sam"] * self.alignment_loss(outputs)
        return losses

    def segmentation_loss(self, outputs: TrainingOutputs) -> torch.Tensor:
        """``Lseg`` over the per-image classifier ``cat(As, [Au,] Fl^u)``.

        Columns: the fixed text rows, then the image's latent prototypes in pseudo-label order;
        latent regions that vanish at feature resolution have no prototype and are ignored.
        """
        features, protos = outputs.features, outputs.prototypes
        b, device = features.shape[0], features.device
        fixed = outputs.fixed_text.to(features.dtype)  # (C0, D)
        c0 = fixed.shape[0]
        max_latent = max(p.latent.shape[0] for p in protos)
        classifier = fixed.new_zeros(b, c0 + max_latent, fixed.shape[1])  # (B, C, D)
        classifier[:, :c0] = fixed
        present = torch.zeros(b, c0 + max_latent, dtype=torch.bool, device=device)
        present[:, :c0] = True
        # Per-image label -> column table; latent labels without a prototype map to ignore.
        lut = torch.full((b, 256), IGNORE_LABEL, dtype=torch.long, device=device)
        lut[:, :c0] = torch.arange(c0, device=device)
        for i, proto in enumerate(protos):
            n = proto.latent.shape[0]
            classifier[i, c0 : c0 + n] = F.normalize(proto.latent, dim=-1)
            present[i, c0 : c0 + n] = True
            lut[i, proto.latent_ids] = torch.arange(c0, c0 + n, device=device)
        labels = outputs.pseudo_labels
        target = lut.gather(1, labels.flatten(1)).view_as(labels)  # (B, H, W)
        tokens = F.normalize(features.permute(0, 2, 3, 1), dim=-1)  # (B, h, w, D) unit
        cosine = tokens.flatten(1, 2) @ classifier.transpose(1, 2)  # (B, h·w, C)
        logits = cosine.view(*tokens.shape[:3], -1).permute(0, 3, 1, 2) / outputs.logit_tau
        logits = logits.masked_fill(~present[:, :, None, None], _PAD_LOGIT)  # (B, C, h, w)
        return segmentation_loss(
            logits,
            target,
            ce_weight=self.ce_weight,
            focal_weight=self.focal_weight,
            focal_gamma=self.focal_gamma,
        )

    def alignment_loss(self, outputs: TrainingOutputs) -> torch.Tensor:
        """``Lsam`` of the local seen prototypes against the (gathered) CLS tokens ``(B, D)``.

        Normalised by the global prototype count over the world size (every process joins the
        all-reduce, also one without prototypes), so DDP's average of the processes' losses is the
        mean over all prototypes; in one process that is the plain mean.
        """
        seen_protos = torch.cat([p.seen for p in outputs.prototypes])  # (O, D), local batch
        seen_ids = torch.cat([p.seen_ids for p in outputs.prototypes])  # (O,)
        normaliser = None  # one process: the plain mean
        if is_distributed():
            normaliser = mean_count_per_process(seen_protos.shape[0], seen_protos.device)
        if self.gather_across_processes:
            all_cls, _ = all_gather_rows(outputs.cls)  # (B_global, D), no gradient
        else:
            all_cls = outputs.cls.detach()  # (B, D) local batch only
        return semantic_alignment_loss(
            seen_protos,
            outputs.seen_text[seen_ids],
            all_cls,
            tau_f=self.sam_tau_f,
            tau_c=self.sam_tau_c,
            normaliser=normaliser,
        )

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed + get_rank())  # different noise on every process
            self._generators[device] = generator
        return self._generators[device]


def _check_ranges(non_negative: dict[str, float], positive: dict[str, float]) -> None:
    """Raises unless weights are finite and >= 0 and temperatures finite and > 0.

    A zero temperature is a NaN loss at the first iteration; a negative weight maximises its loss.
    """
    for name, value in non_negative.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ChimeraSegCriterion: {name}={value!r} must be finite and >= 0")
    for name, value in positive.items():
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"ChimeraSegCriterion: {name}={value!r} must be finite and > 0")
