"""MaskCLIP-style dense baseline: the whole CLIP ViT image encoder on every image.

This is what adaptation methods pay at test time and what ChimeraSeg's student replaces:
CLIP mean/std -> patchify -> class token + bicubically interpolated positional embedding ->
ln_pre -> the first L-1 blocks -> the last block's value path only (``out_proj(v_proj(ln_1(x)))``,
folded into one matrix; no residual, no FFN, as MaskCLIP does) -> ln_post -> proj -> cosine
against the text embeddings / tau -> bilinear upsampling to the input size, by the same function
the core uses (:func:`chimeraseg.modeling.inference.upsample_logits`), so both pay the same for it.

The logits are built class-major and contiguous ``(B, N, h, w)``. Before 2026-11-29 they were a
transposed view whose batch-1 strides PyTorch's fast bilinear kernel rejects: upsampling a
32x32 grid of 171 classes to 512x512 then took 0.7-0.95 s instead of 0.1 s, which made the
baseline about 30% slower at batch 1 (not at batch 8) and the earlier batch-1 ratios flattering.

:class:`chimeraseg.clip.teacher.CLIPTeacher` is not used for the timing because its dense path
also keeps the last block's residual and FFN (docs/METHOD.md, 'Frozen CLIP teacher') and runs the
full last block for the class token, i.e. it is slower than MaskCLIP; the baseline here is the
cheaper, stronger competitor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from chimeraseg.clip.partial import extract_block_weights, fuse_value_projection
from chimeraseg.clip.teacher import interpolate_pos_embed
from chimeraseg.modeling.inference import upsample_logits
from chimeraseg.modeling.settings import ChimeraSegSettings

# The same logit temperature as the student (one home: the model settings).
TEMPERATURE = ChimeraSegSettings().logit_tau


class MaskCLIPDense(nn.Module):
    """Dense zero-shot segmentation with the full frozen CLIP image encoder.

    Args:
        clip_model: open_clip ``CLIP`` with a ViT image tower.
        text: ``(N, D)`` unit-norm class embeddings.
    """

    def __init__(self, clip_model: nn.Module, text: torch.Tensor) -> None:
        super().__init__()
        self.visual = clip_model.visual.eval()
        self.patch = int(self.visual.conv1.kernel_size[0])
        self.native_grid = tuple(int(g) for g in self.visual.grid_size)
        last = extract_block_weights(self.visual.transformer.resblocks[-1], index="last")
        self.ln_1 = last.ln_1
        gamma = getattr(last.ls_1, "gamma", None)
        weight, bias = fuse_value_projection(
            last.v_weight, last.v_bias, last.out_proj.weight, last.out_proj.bias, gamma
        )
        self.register_buffer("value_weight", weight, persistent=False)  # (Dv, Dv) folded
        self.register_buffer("value_bias", bias, persistent=False)
        self.register_buffer("text", text.contiguous(), persistent=False)
        mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(1 + h*w, Dv)`` positional embedding for ``grid`` (cached; computed once per size)."""
        if grid not in self._pos:
            pos = self.visual.positional_embedding
            self._pos[grid] = interpolate_pos_embed(pos, self.native_grid, grid)
        return self._pos[grid]

    def penultimate(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Runs CLIP up to the last block: ``(B, 3, H, W)`` -> tokens ``(B, 1 + h*w, Dv)``."""
        v = self.visual
        x = v.conv1((images - self.mean) / self.std)  # (B, Dv, h, w)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, Dv)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, Dv)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + self._pos_embed(grid))
        seq_first = not getattr(v.transformer, "batch_first", False)
        if seq_first:
            x = x.transpose(0, 1)  # (L, B, Dv) for sequence-first blocks
        for block in v.transformer.resblocks[:-1]:
            x = block(x)
        return (x.transpose(0, 1) if seq_first else x), grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` 0..255 RGB (H, W multiples of 16) -> logits ``(B, N, H, W)``."""
        tokens, (h, w) = self.penultimate(images)
        patches = tokens[:, 1:]  # (B, h*w, Dv)
        dense = F.linear(self.ln_1(patches), self.value_weight, self.value_bias)
        dense = self.visual.ln_post(dense) @ self.visual.proj  # (B, h*w, D)
        with torch.autocast(images.device.type, enabled=False):  # cosine in fp32, as the core
            unit = F.normalize(dense.float(), dim=-1).transpose(1, 2)  # (B, D, h*w)
            logits = (self.text / TEMPERATURE) @ unit  # (B, N, h*w) contiguous
        logits = logits.view(images.shape[0], -1, h, w)  # (B, N, h, w)
        return upsample_logits(logits, tuple(images.shape[-2:]))
