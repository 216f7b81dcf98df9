"""Test-time augmentation (flip and multi-scale) on detectron2's ``TEST.AUG.*`` keys.

``TEST.AUG.ENABLED`` turns it on for evaluation (``ChimeraSegTrainer.test``); the augmented inputs
come from detectron2's own :class:`~detectron2.modeling.DatasetMapperTTA`: one input per short
side of ``TEST.AUG.MIN_SIZES`` (long side at most ``TEST.AUG.MAX_SIZE``), and each of them
mirrored too when ``TEST.AUG.FLIP``. detectron2's defaults (sizes 400-1200) are detection sizes;
for 512-pixel segmentation configs the customary scales 0.5-1.75 are
``TEST.AUG.MIN_SIZES (256, 384, 512, 640, 768, 896)``.

The model returns every input's logits at the original image size, so the augmented views are
already aligned once the mirrored ones are flipped back. The views are combined by averaging the
**logits**, not softmax probabilities: the evaluator and the demo then add the inductive bias γ
to the unseen logits of the average exactly as they do without augmentation (paper §III-D), and
the argmax of averaged logits is what the plain model would give when every view agrees.
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.modeling import DatasetMapperTTA
from fvcore.transforms import HFlipTransform
from torch import nn

from chimeraseg.d2.ddp import unwrap_model

__all__ = ["SemanticSegmentorWithTTA", "same_size_chunks"]


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a semantic-segmentation model (``[{"sem_seg": (N, H, W)}]`` per input) with TTA.

    Args:
        model: The model (DDP is unwrapped); it must return logits at the inputs' ``height`` /
            ``width``, as :class:`chimeraseg.d2.meta_arch.ChimeraSeg` does.
        tta_mapper: Callable turning one mapped input into its augmented versions, each with a
            ``"transforms"`` list; default ``DatasetMapperTTA(cfg)``.
        cfg: Config for the default mapper (``TEST.AUG.*``).
        batch_size: At most this many augmented views per forward pass; a pass holds only
            consecutive views of the same image size (a scale and its mirror), so no view is
            padded to a larger one and every batch size gives the result of batch size 1.
    """

    def __init__(
        self,
        model: nn.Module,
        tta_mapper: Any = None,
        cfg: CfgNode | None = None,
        batch_size: int = 1,
    ) -> None:
        super().__init__()
        if tta_mapper is None:
            if cfg is None:
                raise ValueError("SemanticSegmentorWithTTA needs a tta_mapper or a cfg")
            tta_mapper = DatasetMapperTTA(cfg)
        self.model = unwrap_model(model)
        self.tta_mapper = tta_mapper
        self.batch_size = max(int(batch_size), 1)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Per input ``{"sem_seg": (N, height, width)}``: the mean logits of its views."""
        return [self._one(inp) for inp in batched_inputs]

    def _one(self, inp: dict[str, Any]) -> dict[str, torch.Tensor]:
        views = self.tta_mapper(inp)
        total = None
        for chunk in same_size_chunks(views, self.batch_size):
            with torch.no_grad():
                outputs = self.model(chunk)
            for view, output in zip(chunk, outputs):
                logits = output["sem_seg"]  # (N, height, width), already at the original size
                if any(isinstance(t, HFlipTransform) for t in view["transforms"].transforms):
                    logits = logits.flip(dims=[-1])  # undo the mirror
                total = logits.clone() if total is None else total.add_(logits)
        return {"sem_seg": total / len(views)}


def same_size_chunks(views: list[dict[str, Any]], batch_size: int) -> list[list[dict[str, Any]]]:
    """Splits ``views`` in order into runs of at most ``batch_size`` views of one image size.

    Batching views of different scales would pad the smaller ones to the largest (the model pads
    a batch to one size), which changes their logits; consecutive same-size views keep the order
    of summation, so the average equals one view per pass.

    Args:
        views: mapped inputs, each with an ``"image"`` ``(3, H, W)``.
        batch_size: the most views per chunk (>= 1).
    """
    chunks: list[list[dict[str, Any]]] = []
    for view in views:
        size = tuple(view["image"].shape[-2:])
        last = chunks[-1] if chunks else None
        if last and len(last) < batch_size and tuple(last[0]["image"].shape[-2:]) == size:
            last.append(view)
        else:
            chunks.append([view])
    return chunks
