"""Frozen CLIP teacher: global image embedding and dense value-path patch features.

Dense path (``dense_path``), from the penultimate tokens ``p`` through the last block's value
projection ``V`` (``v_proj`` then ``out_proj``, layer scale folded in):

* ``"value_ffn"`` (default): ``x = p + V(ln_1(p)); x = x + mlp(ln_2(x))``, i.e. the value path
  with the block's residual and FFN, as in the VEncoder of the CLIP Semantic Head;
* ``"value"``: ``x = V(ln_1(p))``, the value path alone as in MaskCLIP (no residual, no FFN);

then ``ln_post`` and ``proj`` in both cases.

Input convention: ``images (B, 3, H, W)`` float RGB in **0..255** (detectron2's convention); the
CLIP mean/std normalisation happens inside. Inputs whose H or W is not a multiple of the patch size
(16) are zero-padded on the bottom/right *after* normalisation (i.e. with the CLIP mean colour),
so the dense grid is ``ceil(H/16) x ceil(W/16)`` and cell ``(i, j)`` covers pixels
``[16i, 16i+16) x [16j, 16j+16)`` of the input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from chimeraseg.clip.block_weights import FusedValueMap, extract_block_weights, tensor_cache_key
from chimeraseg.clip.partial import keep_frozen_in_eval

__all__ = [
    "clip_temperature",
    "DENSE_PATHS",
    "TeacherOutput",
    "CLIPTeacher",
    "clip_pixel_stats",
    "interpolate_pos_embed",
]

DENSE_PATHS = ("value_ffn", "value")


def clip_temperature(clip_model: nn.Module) -> float:
    """The CLIP's own learnt softmax temperature ``1 / exp(logit_scale)``.

    0.01 for OpenAI's CLIP (logit scale 100), about 0.059 for the synthetic world's; SAM's text
    temperature ``τc`` defaults to it (docs/METHOD.md, 'Semantic Alignment Module').

    Raises:
        TypeError: when ``clip_model`` has no ``logit_scale``.
    """
    scale = getattr(clip_model, "logit_scale", None)
    if not isinstance(scale, torch.Tensor):
        raise TypeError(
            f"{type(clip_model).__name__} has no logit_scale tensor: set SAM's tau_c explicitly "
            "(MODEL.CHIMERASEG.SAM.TAU_C)"
        )
    return float(1.0 / scale.detach().double().exp())


class TeacherOutput(NamedTuple):
    """Outputs of :class:`CLIPTeacher`.

    Attributes:
        cls: ``(B, D)`` L2-normalised image embeddings ``normalize(ln_post(CLS) @ proj)``.
        dense: ``(B, D, ceil(H/16), ceil(W/16))`` value-path patch features, NOT normalised.
    """

    cls: torch.Tensor
    dense: torch.Tensor


def clip_pixel_stats(visual: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's input normalisation for RGB in 0..1: ``(mean, std)``, each ``(1, 3, 1, 1)`` float32.

    Taken from the tower's ``preprocess_cfg`` when open_clip sets one, else OpenAI's statistics.
    """
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", OPENAI_DATASET_MEAN), dtype=torch.float32)
    std = torch.tensor(cfg.get("std", OPENAI_DATASET_STD), dtype=torch.float32)
    return mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


def interpolate_pos_embed(
    pos_embed: torch.Tensor, native_grid: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubically resizes CLIP's positional embedding to another patch grid.

    Args:
        pos_embed: ``(1 + gh*gw, Dv)`` with the class-token row first.
        native_grid: ``(gh, gw)`` the embedding was trained for.
        grid: Target ``(h, w)``.

    Returns:
        ``(1 + h*w, Dv)``; ``pos_embed`` itself (exactly) when ``grid == native_grid``.
    """
    if tuple(grid) == tuple(native_grid):
        return pos_embed
    gh, gw = native_grid
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)  # (1, Dv, gh, gw)
    patch_pos = F.interpolate(
        patch_pos.float(), size=tuple(grid), mode="bicubic", align_corners=False
    ).to(pos_embed.dtype)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)  # (h*w, Dv)
    return torch.cat([cls_pos, patch_pos], dim=0)


class CLIPTeacher(nn.Module):
    """Frozen CLIP image encoder giving ``Cg`` and MaskCLIP-style dense features.

    The teacher keeps a reference to ``clip_model.visual`` (no copy) and freezes it. It always runs
    in eval mode under ``torch.no_grad``.

    Args:
        clip_model: open_clip ``CLIP`` (or its ``visual`` tower) with a ViT image encoder.
        dense_path: ``"value_ffn"`` (value path with residual and FFN) or ``"value"`` (value
            path alone, MaskCLIP); see the module docstring.

    Attributes:
        embed_dim: ``D``.
        width: ``Dv``.
        patch_size: Patch side (16 for ViT-B/16).
        dense_path: The dense path in use.
    """

    def __init__(self, clip_model: nn.Module, *, dense_path: str = DENSE_PATHS[0]) -> None:
        super().__init__()
        if dense_path not in DENSE_PATHS:
            raise ValueError(
                f"CLIPTeacher: dense_path={dense_path!r} is not one of {DENSE_PATHS} "
                "('value_ffn': value path with residual and FFN; 'value': value path alone)"
            )
        self.dense_path = dense_path
        visual = getattr(clip_model, "visual", clip_model)
        for attr in ("conv1", "class_embedding", "positional_embedding", "transformer", "proj"):
            if getattr(visual, attr, None) is None:
                raise TypeError(
                    f"CLIPTeacher needs an open_clip ViT image tower; {type(visual).__name__} has "
                    f"no '{attr}'"
                )
        if getattr(visual, "attn_pool", None) is not None:
            raise NotImplementedError("CLIPTeacher does not support attentional-pool towers")
        self.visual = visual.eval()
        self.visual.requires_grad_(False)
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.native_grid = tuple(int(g) for g in visual.grid_size)
        self.width = int(visual.conv1.out_channels)
        self.embed_dim = int(visual.proj.shape[1])
        mean, std = clip_pixel_stats(visual)  # (1, 3, 1, 1) each, for 0..1 RGB
        self.register_buffer("pixel_mean", mean * 255.0, persistent=False)
        self.register_buffer("pixel_std", std * 255.0, persistent=False)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self._fused_value = FusedValueMap()  # the last block's folded value map

    def train(self, mode: bool = True) -> CLIPTeacher:
        """The teacher is frozen (``requires_grad_(False)`` above), so it stays in eval mode."""
        return keep_frozen_in_eval(super().train(mode))

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(1 + h*w, Dv)`` positional embedding for ``grid``, cached per grid size."""
        pos = self.visual.positional_embedding
        key = (grid, tensor_cache_key(pos))  # refresh if the weights change
        if key not in self._pos_cache:
            self._pos_cache = {k: v for k, v in self._pos_cache.items() if k[1:] == key[1:]}
            self._pos_cache[key] = interpolate_pos_embed(pos, self.native_grid, grid)
        return self._pos_cache[key]

    def _run_blocks(self, blocks: nn.ModuleList | list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """Runs whole blocks on ``x (B, L, Dv)`` in the transformer's own layout."""
        seq_first = not getattr(self.visual.transformer, "batch_first", False)
        if seq_first:
            x = x.transpose(0, 1)  # (B, L, Dv) -> (L, B, Dv) for sequence-first blocks
        for block in blocks:
            x = block(x)
        return x.transpose(0, 1) if seq_first else x

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Normalises, pads and patchifies; returns tokens ``(B, 1 + h*w, Dv)`` and ``(h, w)``."""
        v = self.visual
        x = (images - self.pixel_mean) / self.pixel_std
        pad_h = -x.shape[-2] % self.patch_size
        pad_w = -x.shape[-1] % self.patch_size
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros == CLIP mean colour after normalisation
        x = v.conv1(x.to(v.conv1.weight.dtype))  # (B, Dv, h, w)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, Dv)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, Dv)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(grid).to(x.dtype)
        return v.ln_pre(x), grid

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> TeacherOutput:
        """Encodes images with the frozen CLIP.

        Args:
            images: ``(B, 3, H, W)`` float RGB in 0..255 (not normalised). Any ``H, W``; sizes that
                are not multiples of 16 are padded bottom/right (see module docstring).

        Returns:
            :class:`TeacherOutput` with ``cls (B, D)`` unit rows and
            ``dense (B, D, ceil(H/16), ceil(W/16))``.
        """
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"CLIPTeacher expects float images (B, 3, H, W) in 0..255; got "
                f"{tuple(images.shape)} {images.dtype}"
            )
        v = self.visual
        tokens, (h, w) = self._embed(images)
        blocks = v.transformer.resblocks
        penultimate = self._run_blocks(blocks[:-1], tokens)  # (B, 1 + h*w, Dv)
        last = blocks[-1]
        cls_token = self._run_blocks([last], penultimate)[:, 0]  # (B, Dv), full attention
        cls = F.normalize(v.ln_post(cls_token) @ v.proj, dim=-1)  # (B, D)

        x = self._dense_tokens(last, penultimate[:, 1:])  # (B, h*w, Dv)
        dense = v.ln_post(x) @ v.proj  # (B, h*w, D)
        dense = dense.transpose(1, 2).reshape(dense.shape[0], -1, h, w)  # (B, D, h, w)
        return TeacherOutput(cls=cls, dense=dense)

    def _dense_tokens(self, last: nn.Module, patches: torch.Tensor) -> torch.Tensor:
        """The last block's value path on the penultimate patch tokens.

        Args:
            last: The last transformer block.
            patches: ``(B, h*w, Dv)`` penultimate patch tokens ``p``.

        Returns:
            ``(B, h*w, Dv)``: ``V(ln_1(p))`` for ``"value"``; for ``"value_ffn"``
            ``x = p + V(ln_1(p))`` followed by ``x + mlp(ln_2(x))``.
        """
        bw = extract_block_weights(last, index="last")
        weight, bias = self._fused_value(bw.v_weight, bw.v_bias, bw.out_proj, bw.ls_1)
        value = F.linear(bw.ln_1(patches), weight, bias)  # V(ln_1(p)), out_proj and ls_1 folded
        if self.dense_path == "value":
            return value
        x = patches + value
        return x + bw.ls_2(bw.mlp(bw.ln_2(x)))
