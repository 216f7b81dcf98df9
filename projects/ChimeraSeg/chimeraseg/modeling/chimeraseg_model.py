"""ChimeraSegModel: student + CLIP Semantic Head + frozen CLIP teacher (paper §III, Fig. 2, 6).

Training graph and inference as in docs/METHOD.md.

Label spaces. ``forward_train`` takes labels in the FULL dataset index space ``0..N-1`` with 255
ignore (unseen pixels already 255, see the data mapper). Internally seen ids become ``0..Ns-1``
(in the order of ``seen_ids``); the per-image classifier is ``cat(As, [Au,] Fl^u)``:

* columns ``0..Ns-1``: seen text embeddings ``As``;
* transductive only, columns ``Ns..Ns+Nu-1``: unseen text embeddings ``Au`` (pseudo label
  ``Ns + j`` = unseen class ``unseen_ids[j]``);
* then the image's latent prototypes, in the order of their pseudo labels; latent regions that
  vanish at feature resolution have no prototype and their pixels are ignored.

Checkpoints: :meth:`state_dict` omits the teacher and every frozen CLIP copy in the head (they are
rebuilt from CLIP), and :meth:`load_state_dict` accepts such state dicts with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.modeling.csh import (
    CLIPSemanticHead,
    RowFn,
    fold_projection,
    folded_cosine_rows,
)
from chimeraseg.modeling.inference import LogitsFn, slide_inference, whole_inference
from chimeraseg.modeling.losses.segmentation import segmentation_loss
from chimeraseg.modeling.losses.selective_global_distillation import SelectiveGlobalDistillation
from chimeraseg.modeling.losses.semantic_alignment import semantic_alignment_loss
from chimeraseg.modeling.prototypes import ImagePrototypes, class_prototypes, downsample_labels
from chimeraseg.modeling.pseudo_masks import (
    PseudoMaskConfig,
    PseudoMasks,
    cell_fraction,
    generate_pseudo_masks,
)
from chimeraseg.utils.distributed import all_gather_rows, get_rank

__all__ = ["ChimeraSegModel"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_PAD_LOGIT = -1.0e4  # logit of absent latent columns: exp(-1e4) == 0, finite under upsampling
_UNSEEN_LEAK, _INVALID = -2, -1  # label lookup-table markers


class ChimeraSegModel(nn.Module):
    """The Chimera-Seg model in plain PyTorch (the detectron2 meta-arch wraps it).

    Args:
        backbone: images ``(B, 3, H, W)`` ImageNet-normalised -> dict of multi-scale features.
        decoder: feature dict -> ``(B, E, H/4, W/4)``.
        head: :class:`CLIPSemanticHead` (``E -> D``).
        teacher: frozen CLIP teacher (``images 0..255 -> TeacherOutput``); None = inference only.
        seen_text: ``(Ns, D)`` seen text embeddings, rows ordered like ``seen_ids``.
        unseen_text: ``(Nu, D)`` unseen text embeddings, rows ordered like ``unseen_ids``.
        seen_ids: dataset indices of the seen classes.
        unseen_ids: dataset indices of the unseen classes.
        num_classes: ``N`` of the dataset (``<= 255``).
        setting: ``"inductive"`` or ``"transductive"``.
        pseudo_masks: pseudo-mask knobs (defaults when None).
        sgd: SGD module; None disables SGD (Table III). Its ``gather_across_processes`` flag
            also decides whether SAM gathers CLS tokens across processes (True when None).
        sgd_weight: weight of ``Lsgd`` (0 skips its computation).
        lambda_sam: weight of ``Lsam`` (0 skips it; Table XII).
        tau: logit temperature ``τ`` of the cosine classifier.
        tau_f: SAM prototype temperature.
        tau_c: SAM text temperature.
        ce_weight: cross-entropy weight in ``Lseg``.
        focal_weight: focal-loss weight in ``Lseg``.
        focal_gamma: focal ``γ``.
        pixel_mean: student normalisation mean (on 0..255 RGB).
        pixel_std: student normalisation std.
        fold_projection: at inference, use the folded ``Fres·(P·Âᵀ)`` path (exact; more work,
            see :func:`~chimeraseg.modeling.csh.fold_projection`).
        head_downsample: INEXACT speed option, off by default (1). ``k > 1`` average-pools the
            decoder output ``k x k`` (``ceil_mode``) before the CSH at inference, so the CSH runs
            at stride ``4k`` on ``k²`` times fewer positions; the logits are still upsampled once
            to the input size. Training never pools.
        seed: seed of the Gumbel-noise generator (offset by the process rank); None = global RNG.
        ignore_index: ignore label.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        decoder: nn.Module,
        head: CLIPSemanticHead,
        teacher: nn.Module | None,
        seen_text: torch.Tensor,
        unseen_text: torch.Tensor,
        seen_ids: Sequence[int],
        unseen_ids: Sequence[int],
        num_classes: int,
        setting: str = "inductive",
        pseudo_masks: PseudoMaskConfig | None = None,
        sgd: SelectiveGlobalDistillation | None = None,
        sgd_weight: float = 1.0,
        lambda_sam: float = 0.5,
        tau: float = 0.07,
        tau_f: float = 0.07,
        tau_c: float = 0.01,
        ce_weight: float = 1.0,
        focal_weight: float = 1.0,
        focal_gamma: float = 2.0,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        fold_projection: bool = False,
        head_downsample: int = 1,
        seed: int | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if setting not in ("inductive", "transductive"):
            raise ValueError(f"ChimeraSegModel: setting={setting!r} is not inductive|transductive")
        self.backbone, self.decoder, self.head, self.teacher = backbone, decoder, head, teacher
        self.sgd = sgd
        self.setting = setting
        self.pseudo_mask_config = pseudo_masks or PseudoMaskConfig()
        weights = {"sgd_weight": sgd_weight, "lambda_sam": lambda_sam, "ce_weight": ce_weight}
        weights.update(focal_weight=focal_weight, focal_gamma=focal_gamma)
        _check_loss_arguments(weights, {"tau": tau, "tau_f": tau_f, "tau_c": tau_c})
        self.sgd_weight, self.lambda_sam = float(sgd_weight), float(lambda_sam)
        self.tau, self.tau_f, self.tau_c = float(tau), float(tau_f), float(tau_c)
        self.ce_weight, self.focal_weight = float(ce_weight), float(focal_weight)
        self.focal_gamma = float(focal_gamma)
        self.fold_projection = fold_projection
        self.head_downsample = _check_head_downsample(head_downsample)
        self.seed = seed
        self.ignore_index = ignore_index
        self.num_classes = num_classes
        self.seen_ids, self.unseen_ids = [int(i) for i in seen_ids], [int(i) for i in unseen_ids]
        self._check_split(seen_text, unseen_text)
        self.register_buffer("seen_text", F.normalize(seen_text.float(), dim=-1), persistent=False)
        self.register_buffer(
            "unseen_text", F.normalize(unseen_text.float(), dim=-1), persistent=False
        )
        self.register_buffer("label_lut", self._build_label_lut(), persistent=False)
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self._generators: dict[torch.device, torch.Generator] = {}
        self.register_state_dict_post_hook(_drop_frozen_clip_keys)
        self.register_load_state_dict_pre_hook(_restore_frozen_clip_keys)

    # ----------------------------------------------------------------------------- setup helpers
    def _check_split(self, seen_text: torch.Tensor, unseen_text: torch.Tensor) -> None:
        seen, unseen = set(self.seen_ids), set(self.unseen_ids)
        everything = self.seen_ids + self.unseen_ids
        if not 0 < self.num_classes <= self.ignore_index:
            raise ValueError(f"ChimeraSegModel: num_classes={self.num_classes} not in [1, 255]")
        if seen & unseen or len(seen) != len(self.seen_ids) or len(unseen) != len(self.unseen_ids):
            raise ValueError("ChimeraSegModel: seen_ids/unseen_ids overlap or repeat an id")
        bad = [i for i in everything if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"ChimeraSegModel: class ids {bad} outside [0, {self.num_classes})")
        d = self.head.embed_dim
        for name, text, ids in (("seen", seen_text, seen), ("unseen", unseen_text, unseen)):
            if text.dim() != 2 or text.shape[0] != len(ids) or text.shape[1] != d:
                raise ValueError(
                    f"ChimeraSegModel: {name}_text {tuple(text.shape)} must be ({len(ids)}, {d})"
                )

    def _build_label_lut(self) -> torch.Tensor:
        """``(256,)`` long: dataset id -> training id (seen), 255 -> 255, else a marker."""
        lut = torch.full((256,), _INVALID, dtype=torch.long)
        lut[self.ignore_index] = self.ignore_index
        lut[self.unseen_ids] = _UNSEEN_LEAK
        lut[self.seen_ids] = torch.arange(len(self.seen_ids))
        return lut

    def frozen_clip_state_keys(self) -> list[str]:
        """State-dict keys (relative to this module) of frozen CLIP-derived tensors."""
        keys = []
        if self.teacher is not None:
            keys += [f"teacher.{k}" for k in self.teacher.state_dict(keep_vars=True)]
        for name, module in self.head.frozen_clip_modules().items():
            for key, value in module.state_dict(keep_vars=True).items():
                if not (isinstance(value, nn.Parameter) and value.requires_grad):
                    keys.append(f"head.{name}.{key}")
        return keys

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed + get_rank())  # different noise on every process
            self._generators[device] = generator
        return self._generators[device]

    # ----------------------------------------------------------------------------------- shared
    @property
    def num_seen(self) -> int:
        """``Ns``: number of seen classes (training ids ``0..Ns-1``, in ``seen_ids`` order)."""
        return len(self.seen_ids)

    def map_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset ids ``(B, H, W)`` -> training ids (seen ``0..Ns-1``, 255).

        Raises:
            ValueError: on a value that is not a class id or 255, or on an unseen id (the
                zero-shot rule requires unseen pixels to be 255 in training).
        """
        if labels.dim() != 3 or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be integer (B, H, W); got {tuple(labels.shape)}")
        labels = labels.long()
        in_range = (labels >= 0) & (labels <= 255)
        mapped = self.label_lut[labels.clamp(0, 255)]
        bad = (mapped < 0) | ~in_range
        if bool(bad.any()):
            value = int(labels[bad][0])
            if 0 <= value <= 255 and int(self.label_lut[value]) == _UNSEEN_LEAK:
                raise ValueError(
                    f"training label contains unseen class id {value}; unseen pixels must be "
                    "255 in training (zero-shot rule, see the data mapper)"
                )
            raise ValueError(
                f"training label value {value} is neither a class id in [0, {self.num_classes}) "
                f"nor the ignore value {self.ignore_index}"
            )
        return mapped

    def residual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Student + CSH up to ``Fres``: ``(B, 3, H, W)`` 0..255 -> ``(B, h, w, Dv)``."""
        x = (images - self.pixel_mean) / self.pixel_std
        return self.head.residual_tokens(self.decoder(self.backbone(x)))

    def clip_features(self, images: torch.Tensor) -> torch.Tensor:
        """``Fc``: ``(B, 3, H, W)`` 0..255 RGB -> ``(B, D, h, w)``."""
        return self.head.proj(self.residual_tokens(images)).permute(0, 3, 1, 2)  # (B, D, h, w)

    # ------------------------------------------------------------------------------------ train
    def forward_train(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses, already weighted (their sum is ``L``).

        Args:
            images: ``(B, 3, H, W)`` float RGB 0..255.
            labels: ``(B, H, W)`` long dataset ids, 255 ignore (unseen already 255).
            iteration: training iteration (K schedule of SGD).
            valid: ``(B, H, W)`` bool, real (unpadded) pixels; None = all valid (bit-identical
                to not passing it). Padded pixels never form or receive latent regions (see
                :func:`~chimeraseg.modeling.pseudo_masks.generate_pseudo_masks`), and SGD never
                selects a feature position whose valid fraction is below 0.5.

        Returns:
            ``{"loss_seg", "loss_sgd", "loss_sam"}`` scalar tensors.
        """
        if self.teacher is None:
            raise RuntimeError("ChimeraSegModel.forward_train needs a teacher (got None)")
        if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match"
            )
        if valid is not None and (valid.shape != labels.shape or valid.dtype != torch.bool):
            raise ValueError(
                f"valid {tuple(valid.shape)} {valid.dtype} must be bool shaped like labels "
                f"{tuple(labels.shape)}"
            )
        mapped = self.map_labels(labels)
        features = self.clip_features(images)  # (B, D, h, w)
        teacher_out = self.teacher(images)
        pseudo = generate_pseudo_masks(
            mapped,
            teacher_out.dense,
            num_seen=self.num_seen,
            mode=self.setting,
            seen_text=self.seen_text,
            unseen_text=self.unseen_text,
            config=self.pseudo_mask_config,
            ignore_index=self.ignore_index,
            valid=valid,
        )
        small = downsample_labels(pseudo.labels, tuple(features.shape[-2:]))  # (B, h, w)
        protos = class_prototypes(
            features, small, num_seen=self.num_seen, latent_start=pseudo.latent_start
        )
        zero = features.new_zeros((), dtype=torch.float32)
        losses = {"loss_seg": self._segmentation_loss(features, pseudo, protos)}
        losses["loss_sgd"] = zero
        if self.sgd is not None and self.sgd_weight != 0.0:
            generator = self._generator(features.device)
            small_valid = None
            if valid is not None:  # a position is valid when >= half of its pixels are
                small_valid = cell_fraction(valid, tuple(features.shape[-2:])) >= 0.5
            sgd = self.sgd(features, teacher_out.cls, iteration, generator, small_valid)
            losses["loss_sgd"] = self.sgd_weight * sgd
        losses["loss_sam"] = zero
        if self.lambda_sam != 0.0:
            losses["loss_sam"] = self.lambda_sam * self._sam_loss(
                protos, teacher_out.cls, self.gather_across_processes
            )
        return losses

    def _fixed_classifier(self) -> torch.Tensor:
        """``(C0, D)``: ``As`` (inductive) or ``cat(As, Au)`` (transductive)."""
        if self.setting == "transductive":
            return torch.cat([self.seen_text, self.unseen_text])
        return self.seen_text

    def _segmentation_loss(
        self, features: torch.Tensor, pseudo: PseudoMasks, protos: list[ImagePrototypes]
    ) -> torch.Tensor:
        b = features.shape[0]
        fixed = self._fixed_classifier().to(features.dtype)  # (C0, D)
        c0 = fixed.shape[0]
        max_latent = max(p.latent.shape[0] for p in protos)
        classifier = fixed.new_zeros(b, c0 + max_latent, fixed.shape[1])  # (B, C, D)
        classifier[:, :c0] = fixed
        present = torch.zeros(b, c0 + max_latent, dtype=torch.bool, device=features.device)
        present[:, :c0] = True
        # Per-image label -> column table; latent labels without a prototype map to ignore.
        lut = torch.full((b, 256), self.ignore_index, dtype=torch.long, device=features.device)
        lut[:, :c0] = torch.arange(c0, device=features.device)
        for i, proto in enumerate(protos):
            n = proto.latent.shape[0]
            classifier[i, c0 : c0 + n] = F.normalize(proto.latent, dim=-1)
            present[i, c0 : c0 + n] = True
            lut[i, proto.latent_ids] = torch.arange(c0, c0 + n, device=features.device)
        target = lut.gather(1, pseudo.labels.flatten(1)).view_as(pseudo.labels)  # (B, H, W)
        tokens = F.normalize(features.permute(0, 2, 3, 1), dim=-1)  # (B, h, w, D) unit
        cosine = tokens.flatten(1, 2) @ classifier.transpose(1, 2)  # (B, h·w, C)
        logits = cosine.view(*tokens.shape[:3], -1).permute(0, 3, 1, 2) / self.tau  # (B,C,h,w)
        logits = logits.masked_fill(~present[:, :, None, None], _PAD_LOGIT)
        return segmentation_loss(
            logits,
            target,
            ignore_index=self.ignore_index,
            ce_weight=self.ce_weight,
            focal_weight=self.focal_weight,
            focal_gamma=self.focal_gamma,
        )

    @property
    def gather_across_processes(self) -> bool:
        """Whether SAM (like SGD) uses every process's CLS tokens: the SGD module's
        ``gather_across_processes`` flag, or True when SGD is disabled (``sgd is None``)."""
        return True if self.sgd is None else bool(self.sgd.gather_across_processes)

    def _sam_loss(
        self, protos: list[ImagePrototypes], cls: torch.Tensor, gather: bool = True
    ) -> torch.Tensor:
        """``Lsam`` of the local seen prototypes against the CLS tokens ``(B, D)``.

        Args:
            protos: per-image prototypes of the local batch.
            cls: ``(B, D)`` unit teacher CLS embeddings of the local batch.
            gather: use every process's CLS tokens (``forward_train`` passes
                :attr:`gather_across_processes`, the SGD module's flag).
        """
        seen_protos = torch.cat([p.seen for p in protos])  # (O, D) over the local batch
        seen_ids = torch.cat([p.seen_ids for p in protos])  # (O,)
        if gather:
            all_cls, _ = all_gather_rows(cls)  # (B_global, D), no gradient
        else:
            all_cls = cls.detach()  # (B, D) local batch only
        return semantic_alignment_loss(
            seen_protos, self.seen_text[seen_ids], all_cls, tau_f=self.tau_f, tau_c=self.tau_c
        )

    # ------------------------------------------------------------------------------------- test
    def forward_test(
        self,
        images: torch.Tensor,
        vocabulary_embeddings: torch.Tensor,
        unseen_mask: torch.Tensor | None = None,
        gamma: float = 0.0,
        mode: str = "whole",
        crop: tuple[int, int] | None = None,
        stride: tuple[int, int] | None = None,
        chunk_tokens: int | None = None,
        head_downsample: int | None = None,
    ) -> torch.Tensor:
        """Cosine logits over any vocabulary (no CLIP image encoder is run).

        Call under ``torch.inference_mode()`` for speed: without autograd the CSH and the cosine
        run over chunks of positions (exact, see
        :meth:`~chimeraseg.modeling.csh.CLIPSemanticHead.map_positions`) and the logits are
        upsampled image by image.

        Args:
            images: ``(B, 3, H, W)`` float RGB 0..255.
            vocabulary_embeddings: ``(N, D)`` text embeddings ``A``.
            unseen_mask: ``(N,)`` bool, classes that receive ``gamma``; None = none.
            gamma: calibration added to the unseen logits (after ``/τ``).
            mode: ``"whole"`` or ``"slide"``.
            crop: slide window ``(h, w)`` (required for ``"slide"``).
            stride: slide step ``(h, w)`` (required for ``"slide"``).
            chunk_tokens: CSH positions per chunk; None = ``head.chunk_tokens``; 0 = one pass.
            head_downsample: None = ``self.head_downsample``; ``k > 1`` runs the CSH on the
                ``k x k`` average-pooled decoder output (INEXACT speed option).

        Returns:
            ``(B, N, H, W)`` logits ``cos(Fc, A)/τ (+ γ)``.
        """
        text = F.normalize(vocabulary_embeddings.float(), dim=-1)  # (N, D)
        if text.dim() != 2 or text.shape[1] != self.head.embed_dim:
            raise ValueError(
                f"vocabulary_embeddings {tuple(vocabulary_embeddings.shape)} must be "
                f"(N, {self.head.embed_dim})"
            )
        down = self.head_downsample if head_downsample is None else head_downsample
        row_fn = self._folded_row_fn(text) if self.fold_projection else self._row_fn(text)
        logits_fn = self._logits_fn(row_fn, chunk_tokens, _check_head_downsample(down))
        if mode == "whole":
            logits = whole_inference(logits_fn, images)
        elif mode == "slide":
            if crop is None or stride is None:
                raise ValueError("forward_test(mode='slide') needs crop and stride")
            logits = slide_inference(logits_fn, images, crop, stride)
        else:
            raise ValueError(f"forward_test: mode={mode!r} is not 'whole' or 'slide'")
        if unseen_mask is not None and gamma != 0.0:
            if unseen_mask.shape != (text.shape[0],) or unseen_mask.dtype != torch.bool:
                raise ValueError(f"unseen_mask must be bool ({text.shape[0]},)")
            bias = unseen_mask.to(logits.dtype).view(1, -1, 1, 1) * gamma  # (1, N, 1, 1)
            # in place without autograd: no second (B, N, H, W) tensor
            logits = logits + bias if torch.is_grad_enabled() else logits.add_(bias)
        return logits

    def head_features(self, images: torch.Tensor, downsample: int = 1) -> torch.Tensor:
        """Decoder output fed to the CSH: ``(B, 3, H, W)`` 0..255 -> ``(B, E, h/k, w/k)``.

        ``downsample = k > 1`` average-pools ``k x k`` with ``ceil_mode`` (inexact option).
        """
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.decoder(self.backbone(x))  # (B, E, h, w)
        if downsample == 1:
            return features
        return F.avg_pool2d(features, downsample, ceil_mode=True)  # (B, E, h/k, w/k)

    def _row_fn(self, text: torch.Tensor) -> RowFn:
        """``Fres (..., Dv) -> cos(Fres·P, A)/τ (..., N)``."""

        def row_fn(residual: torch.Tensor) -> torch.Tensor:
            tokens = self.head.proj(residual)  # (..., D)
            return (F.normalize(tokens.float(), dim=-1) @ text.t()) / self.tau  # (..., N)

        return row_fn

    def _folded_row_fn(self, text: torch.Tensor) -> RowFn:
        """Like :meth:`_row_fn` through the folded classifier ``P·Âᵀ`` (exact, more work)."""
        weight = self.head.proj.weight.float()  # (Dv, D)
        folded = fold_projection(text, weight)  # (Dv, N)
        gram = weight @ weight.t()  # (Dv, Dv)

        def row_fn(residual: torch.Tensor) -> torch.Tensor:
            return folded_cosine_rows(residual.float(), folded, gram, self.tau)  # (..., N)

        return row_fn

    def _logits_fn(self, row_fn: RowFn, chunk_tokens: int | None, downsample: int) -> LogitsFn:
        def logits_fn(images: torch.Tensor) -> torch.Tensor:
            features = self.head_features(images, downsample)  # (B, E, h, w)
            logits = self.head.map_positions(features, row_fn, chunk_tokens)  # (B, h, w, N)
            return logits.permute(0, 3, 1, 2)  # (B, N, h, w)

        return logits_fn


def _check_loss_arguments(non_negative: dict[str, float], positive: dict[str, float]) -> None:
    """Raises unless loss weights are finite and >= 0 and temperatures finite and > 0.

    A zero temperature is a NaN loss at the first iteration; a negative weight maximises its loss.
    """
    for name, value in non_negative.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ChimeraSegModel: {name}={value!r} must be finite and >= 0")
    for name, value in positive.items():
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"ChimeraSegModel: {name}={value!r} must be finite and > 0")


def _check_head_downsample(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ChimeraSegModel: head_downsample={value!r} must be an int >= 1")
    return value


def _drop_frozen_clip_keys(
    module: ChimeraSegModel, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """State-dict post-hook: removes frozen CLIP tensors (rebuilt from CLIP at load time)."""
    for key in module.frozen_clip_state_keys():
        state_dict.pop(prefix + key, None)


def _restore_frozen_clip_keys(
    module: ChimeraSegModel,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load pre-hook: fills absent frozen CLIP keys with the current tensors (a no-op copy)."""
    live = dict(module.named_parameters(remove_duplicate=False))
    live.update(module.named_buffers(remove_duplicate=False))
    for key in module.frozen_clip_state_keys():
        if prefix + key not in state_dict and key in live:
            state_dict[prefix + key] = live[key].detach()
