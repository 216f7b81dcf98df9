"""Reading the value path of an open_clip visual block: its weights, folded into one affine map.

The value path of a CLIP block (paper §III-B) keeps ``ln_1 -> v_proj -> out_proj -> ls_1`` and the
MLP; query and key are dropped. Both open_clip attention layouts are read: ``nn.MultiheadAttention``
and open_clip's own ``Attention``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "BlockWeights",
    "FusedValueMap",
    "extract_block_weights",
    "fuse_value_projection",
    "layer_scale_gamma",
    "tensor_cache_key",
]


@dataclass
class BlockWeights:
    """References (not copies) to the modules of one CLIP block that the value path needs.

    Attributes:
        ln_1: LayerNorm before attention, over ``Dv``.
        v_weight: ``(Dv, Dv)`` value projection (value third of ``attn.in_proj_weight``).
        v_bias: ``(Dv,)`` value bias, or None.
        out_proj: ``nn.Linear(Dv, Dv)`` attention output projection.
        ls_1: LayerScale after attention (``nn.Identity`` in OpenAI CLIP).
        ln_2: LayerNorm before the MLP.
        mlp: The block's MLP (``c_fc``, activation, ``c_proj``).
        ls_2: LayerScale after the MLP.
    """

    ln_1: nn.Module
    v_weight: torch.Tensor
    v_bias: torch.Tensor | None
    out_proj: nn.Linear
    ls_1: nn.Module
    ln_2: nn.Module
    mlp: nn.Module
    ls_2: nn.Module


def _check_plain_custom_attention(block: nn.Module, index: str) -> None:
    """Rejects open_clip ``Attention`` features whose value path is not v -> out_proj."""
    attn = block.attn
    unsupported = {
        "head_scale": getattr(attn, "head_scale", None) is not None,
        "ln_inner": not isinstance(getattr(attn, "ln_inner", nn.Identity()), nn.Identity),
        "ln_attn": not isinstance(getattr(block, "ln_attn", nn.Identity()), nn.Identity),
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise NotImplementedError(
            f"CLIP visual block {index}: attention features {bad} are not supported by the "
            "value path (only plain v -> out_proj, as in OpenAI CLIP)"
        )


def extract_block_weights(block: nn.Module, index: str = "?") -> BlockWeights:
    """Finds the value-path weights of one open_clip residual attention block.

    Args:
        block: ``ResidualAttentionBlock`` or ``CustomResidualAttentionBlock`` of open_clip.
        index: Block name used in error messages.

    Returns:
        References to the block's weights (shared storage, no copy).

    Raises:
        TypeError: If the block does not have open_clip's structure.
    """
    for attr in ("ln_1", "attn", "ln_2", "mlp"):
        if not hasattr(block, attr):
            raise TypeError(
                f"CLIP visual block {index} ({type(block).__name__}) has no '{attr}'; expected an "
                "open_clip ResidualAttentionBlock"
            )
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention):
        _check_plain_custom_attention(block, index)
    width = attn.out_proj.in_features
    in_w = getattr(attn, "in_proj_weight", None)
    if in_w is not None:
        v_weight = in_w[2 * width : 3 * width]  # rows: [q; k; v], each (Dv, Dv)
    elif getattr(attn, "v_proj_weight", None) is not None:
        v_weight = attn.v_proj_weight
    else:
        raise TypeError(f"CLIP visual block {index}: attention has no in_proj_weight/v_proj_weight")
    in_b = getattr(attn, "in_proj_bias", None)
    v_bias = in_b[2 * width : 3 * width] if in_b is not None else None
    return BlockWeights(
        ln_1=block.ln_1,
        v_weight=v_weight,
        v_bias=v_bias,
        out_proj=attn.out_proj,
        ls_1=getattr(block, "ls_1", nn.Identity()),
        ln_2=block.ln_2,
        mlp=block.mlp,
        ls_2=getattr(block, "ls_2", nn.Identity()),
    )


def layer_scale_gamma(ls: nn.Module) -> torch.Tensor | None:
    """Returns the LayerScale vector ``(Dv,)`` or None for identity."""
    if isinstance(ls, nn.Identity):
        return None
    gamma = getattr(ls, "gamma", None)
    if gamma is None:
        raise TypeError(f"unsupported layer-scale module {type(ls).__name__} (no 'gamma')")
    return gamma


@torch.no_grad()
def tensor_cache_key(t: torch.Tensor | None) -> tuple | None:
    """Identity of a weight's current values, for caches of tensors derived from it.

    ``data_ptr`` catches ``.to()`` and loads into new storage, ``_version`` in-place updates.
    Inference tensors (weights created under ``torch.inference_mode``) have no version counter
    (reading it raises); they count as version 0, so an in-place edit of such weights inside
    inference mode is not detected.
    """
    if t is None:
        return None
    return (t.data_ptr(), 0 if t.is_inference() else t._version, t.dtype)


def fuse_value_projection(
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
    gamma: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Folds ``ls(out_proj(v_proj(x)))`` into one affine map ``x @ W.T + b`` (exact up to rounding).

    Args:
        v_weight: ``(Dv, Dv)`` value weight.
        v_bias: ``(Dv,)`` or None.
        out_weight: ``(Dv, Dv)`` out_proj weight.
        out_bias: ``(Dv,)`` or None.
        gamma: ``(Dv,)`` LayerScale, or None.

    Returns:
        ``W (Dv, Dv)`` and ``b (Dv,)`` with ``W = diag(gamma) Wo Wv`` and
        ``b = gamma * (Wo bv + bo)``.
    """
    weight = out_weight @ v_weight
    bias = torch.zeros_like(weight[:, 0])
    if v_bias is not None:
        bias = bias + out_weight @ v_bias
    if out_bias is not None:
        bias = bias + out_bias
    if gamma is not None:
        weight = gamma[:, None] * weight
        bias = gamma * bias
    return weight, bias


class FusedValueMap:
    """The folded value map of :func:`fuse_value_projection`, cached until a source weight changes.

    Shared by the VEncoder's frozen value paths and the teacher's dense path.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self,
        v_weight: torch.Tensor,
        v_bias: torch.Tensor | None,
        out_proj: nn.Linear,
        ls_1: nn.Module,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``W (Dv, Dv)`` and ``b (Dv,)`` of ``ls_1(out_proj(x @ v_weight.T + v_bias))``."""
        gamma = layer_scale_gamma(ls_1)
        sources = (v_weight, v_bias, out_proj.weight, out_proj.bias, gamma)
        key = tuple(tensor_cache_key(t) for t in sources)
        if self._fused is None or key != self._key:
            # Computed outside inference mode so that a cache filled during evaluation remains
            # usable by later training forwards (inference tensors cannot be saved for backward),
            # and outside autocast so that it keeps the weights' dtype (an AMP training step must
            # not leave a bfloat16 map for float32 evaluation).
            no_autocast = torch.autocast(v_weight.device.type, enabled=False)
            with torch.inference_mode(False), torch.no_grad(), no_autocast:
                self._fused = fuse_value_projection(*sources)
            self._key = key
        return self._fused
