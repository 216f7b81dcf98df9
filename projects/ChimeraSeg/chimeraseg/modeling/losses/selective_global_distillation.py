"""Selective Global Distillation (SGD, paper §III-C, eqs. 1-3)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.losses.outputs import TrainingOutputs
from chimeraseg.modeling.losses.registry import register_loss
from chimeraseg.utils.distributed import all_gather_rows, get_rank
from chimeraseg.utils.precision import float32_island

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import LossSettings, SGDSettings

__all__ = ["SGDLoss", "SelectiveGlobalDistillation", "round_half_away_from_zero"]


def round_half_away_from_zero(value: float | Decimal) -> int:
    """Rounds to the nearest integer, halves away from zero (``2.5 -> 3``, ``-2.5 -> -3``).

    Python's ``round`` rounds halves to even (``round(8999.5) == 9000`` but
    ``round(8998.5) == 8998``), which would make the K schedule stutter; this does not.
    """
    return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class SelectiveGlobalDistillation(nn.Module):
    """Aligns Gumbel-top-K softmax-pooled dense features with CLIP's CLS token by InfoNCE.

    Per image: ``S = Fc·Cg/√D`` over the ``h·w`` positions, Gumbel noise ``g``,
    ``W = softmax((S + g)/τ)``; the top-``K`` positions of ``W`` (selection only, no gradient)
    form ``Fk``. They are ranked by ``S + g`` in float32 (also for bf16 features), which orders
    them as ``W`` does: at ``τ = 0.07`` the softmax leaves most of a large grid's weights exactly
    0 (about 15,000 of the 16,384 positions of a 128 x 128 grid), so ranking ``W`` itself would
    pick most of a large ``K`` among ties. The ranking does not depend on ``τ``.
    ``W' = softmax(Fk·Cg/√D)``, ``Fg = W'ᵀFk``. The loss is ``-log softmax_j(F̂g·Ĉjᵀ/τ)[own]``
    over every CLS token of the global batch (gathered across processes unless
    ``gather=False``, no gradient through the gathered rows), averaged over the local images.

    Padding: with a ``valid`` mask, positions outside it get ``S = -inf`` (weight 0 in ``W``),
    are never selected and never enter ``W'``. ``K`` is clamped per image to its number of valid
    positions, and an image without any valid position keeps its first (top-left) position.

    Args:
        settings: ``K0``, its change per iteration, the schedule (``"decrease"``:
            ``K_t = round(K0 - k_step·t)``, ``"none"``: ``K0``, ``"increase"``:
            ``round(K0 + k_step·t)``; rounding half away from zero) and the temperature ``τ`` of
            InfoNCE (checked when the settings are made; the selection does not depend on it).
    """

    def __init__(self, settings: SGDSettings) -> None:
        super().__init__()
        self.k_init = int(settings.k_init)
        self.k_step = float(settings.k_step)
        self.mode = settings.mode
        self.tau = float(settings.tau)

    def extra_repr(self) -> str:
        return f"k_init={self.k_init}, k_step={self.k_step}, mode={self.mode}, tau={self.tau}"

    def k_at(self, iteration: int, num_positions: int | None = None) -> int:
        """K at ``iteration``, clamped to ``[1, num_positions]`` (upper bound only if given).

        Decimal arithmetic keeps ``9000 - 0.1·15 = 8998.5`` exact before rounding.
        """
        k0, step, t = Decimal(self.k_init), Decimal(str(self.k_step)), Decimal(int(iteration))
        if self.mode == "decrease":
            k = round_half_away_from_zero(k0 - step * t)
        elif self.mode == "increase":
            k = round_half_away_from_zero(k0 + step * t)
        else:
            k = self.k_init
        k = max(k, 1)
        return min(k, num_positions) if num_positions is not None else k

    def pooled_features(
        self,
        features: torch.Tensor,
        cls: torch.Tensor,
        iteration: int,
        generator: torch.Generator | None = None,
        valid: torch.Tensor | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Returns ``Fg``: the Gumbel-top-K, softmax-pooled dense feature of each image.

        Args:
            features: ``(B, D, h, w)`` CSH output ``Fc`` (unnormalised).
            cls: ``(B, D)`` unit CLS embeddings ``Cg`` of the same images.
            iteration: training iteration ``t`` of the K schedule.
            generator: RNG of the Gumbel noise (global RNG when None).
            valid: ``(B, h, w)`` bool, positions that may be selected; None = all (bit-identical
                to not passing it). ``K`` is clamped per image to its valid count (at least 1:
                an image with no valid position keeps position 0).
            out_dtype: dtype of the result; None = the features' dtype. It is computed in
                float32 either way (:meth:`forward` asks for float32, no rounding).

        Returns:
            ``(B, D)`` pooled features (not normalised).
        """
        pooled = self._pooled_float32(features, cls, iteration, generator, valid)
        return pooled.to(out_dtype or features.dtype)

    def _pooled_float32(
        self,
        features: torch.Tensor,
        cls: torch.Tensor,
        iteration: int,
        generator: torch.Generator | None,
        valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`pooled_features` in float32 (arguments alike): ``(B, D)``."""
        b, d, h, w = features.shape
        mask = None if valid is None else _selectable(valid, (b, h, w))  # (B, h·w)
        # K is not clamped to the largest valid count (a host read): picked padding is dropped.
        k = self.k_at(iteration, h * w)
        scale = 1.0 / math.sqrt(d)
        # Float32 whatever autocast is active: S + g ranks for the top-K (a bf16 S would tie most
        # ranks) and W' meets a softmax; the gather's backward accumulates in float32.
        with float32_island(features.device):
            tokens = features.float().flatten(2).transpose(1, 2)  # (B, h·w, D)
            cls = cls.float()
            with torch.no_grad():  # selection only: no gradient through S or the Gumbel noise
                scores = torch.einsum("bnd,bd->bn", tokens, cls) * scale  # (B, h·w)
                if mask is not None:
                    scores = scores.masked_fill(~mask, float("-inf"))
                gumbel = _gumbel_noise(scores.shape, generator, scores.device).to(scores.device)
                # W's order without its float32 underflow (class docstring); padding (-inf) last
                top = (scores + gumbel).topk(k, dim=1).indices  # (B, K)
            selected = tokens.gather(1, top.unsqueeze(-1).expand(b, k, d))  # (B, K, D) = Fk
            sel_logits = torch.einsum("bkd,bd->bk", selected, cls) * scale  # (B, K)
            if mask is not None:  # per-image K_i = min(K, valid count): drop picked padding
                picked = mask.gather(1, top)  # (B, K)
                selected = torch.where(picked[..., None], selected, torch.zeros_like(selected))
                sel_logits = sel_logits.masked_fill(~picked, float("-inf"))
            weights = torch.softmax(sel_logits, dim=1)  # (B, K) = W'
            return torch.einsum("bk,bkd->bd", weights, selected)  # (B, D) = W'ᵀFk

    def forward(
        self,
        features: torch.Tensor,
        cls: torch.Tensor,
        iteration: int,
        *,
        valid: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        gather: bool = True,
    ) -> torch.Tensor:
        """SGD loss (InfoNCE, the negative log of paper eq. 3, mean over local images).

        Args:
            features: ``(B, D, h, w)`` CSH output ``Fc``.
            cls: ``(B, D)`` unit CLS embeddings ``Cg`` (teacher, no gradient).
            iteration: training iteration.
            generator: RNG of the Gumbel noise.
            valid: ``(B, h, w)`` bool, non-padded positions (see :meth:`pooled_features`);
                None = all positions.
            gather: use every process's CLS tokens as negatives (else the local batch's).

        Returns:
            Scalar loss.
        """
        if features.dim() != 4 or cls.shape != (features.shape[0], features.shape[1]):
            raise ValueError(
                f"SelectiveGlobalDistillation: features {tuple(features.shape)} must be "
                f"(B, D, h, w) and cls {tuple(cls.shape)} must be (B, D)"
            )
        pooled = self.pooled_features(features, cls, iteration, generator, valid, torch.float32)
        if gather:
            all_cls, offset = all_gather_rows(cls)
        else:
            all_cls, offset = cls.detach(), 0
        positives = torch.arange(cls.shape[0], device=cls.device) + offset
        with float32_island(features.device):  # cosines / tau in float32 under autocast
            pooled, all_cls = (
                F.normalize(pooled.float(), dim=-1),
                F.normalize(all_cls.float(), dim=-1),
            )
            return F.cross_entropy(pooled @ all_cls.t() / self.tau, positives)


@register_loss("loss_sgd")
class SGDLoss(nn.Module):
    """``Lsgd`` of the batch, with its own Gumbel-noise generator.

    Args:
        settings: the criterion's settings (``settings.sgd``, ``settings.gather`` and
            ``settings.seed`` are read; the generator is seeded ``seed + rank``, so every
            process draws different noise; None = the global RNG).
    """

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        self.sgd = SelectiveGlobalDistillation(settings.sgd)
        self.gather, self.seed = settings.gather, settings.seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor:
        """The unweighted ``Lsgd`` at ``iteration`` (K schedule)."""
        return self.sgd(
            outputs.features,
            outputs.cls,
            iteration,
            generator=self._generator(outputs.features.device),
            valid=outputs.valid,
            gather=self.gather,
        )

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed + get_rank())  # different noise on every process
            self._generators[device] = generator
        return self._generators[device]

    def generator_states(self) -> dict[str, torch.Tensor]:
        """The Gumbel generators' states by device name (checkpointed for an exact resume)."""
        return {str(device): g.get_state() for device, g in self._generators.items()}

    def set_generator_states(self, states: dict[str, torch.Tensor]) -> None:
        """Restores :meth:`generator_states` (generators of absent devices start afresh).

        Raises:
            ValueError: when the loss has no generator (``seed`` None) but states are given.
        """
        if states and self.seed is None:
            raise ValueError("SGDLoss: Gumbel generator states given, but the loss has no seed")
        self._generators.clear()
        for name, state in states.items():
            self._generator(torch.device(name)).set_state(state)


def _selectable(valid: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(B, h, w)`` bool -> ``(B, h·w)`` selectable positions, position 0 kept in empty rows.

    Raises:
        ValueError: if ``valid`` is not a bool tensor of ``shape``.
    """
    if tuple(valid.shape) != shape or valid.dtype != torch.bool:
        raise ValueError(
            f"SelectiveGlobalDistillation: valid {tuple(valid.shape)} {valid.dtype} must be a "
            f"bool tensor of shape (B, h, w) = {shape}"
        )
    mask = valid.flatten(1).clone()  # (B, h·w)
    mask[:, 0] |= ~mask.any(dim=1)  # keep at least one position per image
    return mask


def _gumbel_noise(
    shape: torch.Size, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log U)``, ``U ~ U(0, 1)`` kept away from 0 and 1.

    Drawn on the generator's device when a generator is given, else on ``device``.
    """
    device = generator.device if generator is not None else device
    uniform = torch.rand(shape, generator=generator, device=device)
    tiny = torch.finfo(uniform.dtype).tiny
    uniform = uniform.clamp(min=tiny, max=1.0 - torch.finfo(uniform.dtype).eps)
    return -torch.log(-torch.log(uniform))
