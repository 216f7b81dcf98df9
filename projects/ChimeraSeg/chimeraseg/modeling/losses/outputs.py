"""What the model hands to every loss for one batch (:class:`TrainingOutputs`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chimeraseg.modeling.prototypes import ImagePrototypes, PrototypeTable

__all__ = ["TrainingOutputs"]


@dataclass
class TrainingOutputs:
    """The training outputs of one batch.

    Attributes:
        features: ``(B, D, h, w)`` CSH output ``Fc``.
        cls: ``(B, D)`` unit teacher CLS embeddings ``Cg``.
        pseudo_labels: ``(B, H, W)`` pseudo masks (seen, [unseen,] latent labels, 255).
        prototypes: prototypes of ``features`` under the downsampled pseudo masks: the
            model's fixed-shape table, or one :class:`ImagePrototypes` per image.
        classifier_text: ``(C0, D)`` unit text rows of the ``Lseg`` classifier (``As``, or
            ``cat(As, Au)`` transductive), before the image's latent prototypes.
        seen_text: ``(Ns, D)`` unit seen text embeddings.
        logit_tau: the model's temperature ``τ`` of the cosine logits.
        valid: ``(B, h, w)`` bool positions SGD may select; None = all.
    """

    features: torch.Tensor
    cls: torch.Tensor
    pseudo_labels: torch.Tensor
    prototypes: PrototypeTable | list[ImagePrototypes]
    classifier_text: torch.Tensor
    seen_text: torch.Tensor
    logit_tau: float
    valid: torch.Tensor | None = None
