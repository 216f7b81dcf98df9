"""ChimeraSegModel: student + CLIP Semantic Head + frozen CLIP teacher (paper §III, Fig. 2, 6).

The model builds features; :class:`~chimeraseg.modeling.losses.ChimeraSegCriterion` scores them
(training graph and inference as in docs/METHOD.md).

Label spaces (docs/METHOD.md, 'Label-space conventions'): ``forward_train`` takes dataset ids
``0..N-1`` with 255 ignore (unseen pixels already 255, see the data mapper); seen ids become
``0..Ns-1`` in the order of ``seen_ids``.

Checkpoints: :meth:`state_dict` omits the teacher and every frozen CLIP copy in the head (they are
rebuilt from CLIP), and :meth:`load_state_dict` accepts such state dicts with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg import IGNORE_LABEL
from chimeraseg.modeling.csh import CLIPSemanticHead
from chimeraseg.modeling.inference import InferenceConfig, slide_inference, whole_inference
from chimeraseg.modeling.losses.criterion import ChimeraSegCriterion, TrainingOutputs
from chimeraseg.modeling.prototypes import downsample_labels, prototype_table
from chimeraseg.modeling.pseudo_masks import cell_fraction, generate_pseudo_masks
from chimeraseg.modeling.settings import ChimeraSegSettings
from chimeraseg.utils.precision import float32_island

__all__ = ["ChimeraSegModel"]

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
        criterion: the losses with their weights and temperatures (training needs one).
        settings: the model's settings (``setting``, ``pseudo_masks``, ``logit_tau``,
            ``pixel_mean``, ``pixel_std`` and the default ``inference`` are read here).
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
        criterion: ChimeraSegCriterion | None,
        settings: ChimeraSegSettings,
    ) -> None:
        super().__init__()
        self.backbone, self.decoder, self.head, self.teacher = backbone, decoder, head, teacher
        self.criterion, self.settings = criterion, settings
        self.logit_tau, self.setting = settings.logit_tau, settings.setting
        self.pseudo_mask_config, self.inference = settings.pseudo_masks, settings.inference
        self.num_classes = num_classes
        self.seen_ids, self.unseen_ids = [int(i) for i in seen_ids], [int(i) for i in unseen_ids]
        self._check_split(seen_text, unseen_text)
        self.register_buffer("seen_text", F.normalize(seen_text.float(), dim=-1), persistent=False)
        self.register_buffer(
            "unseen_text", F.normalize(unseen_text.float(), dim=-1), persistent=False
        )
        self.register_buffer("label_lut", self._build_label_lut(), persistent=False)
        mean = torch.tensor(settings.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(settings.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.register_state_dict_post_hook(_drop_frozen_clip_keys)
        self.register_load_state_dict_pre_hook(_restore_frozen_clip_keys)

    # ----------------------------------------------------------------------------- setup helpers
    def _check_split(self, seen_text: torch.Tensor, unseen_text: torch.Tensor) -> None:
        seen, unseen = set(self.seen_ids), set(self.unseen_ids)
        everything = self.seen_ids + self.unseen_ids
        if not 0 < self.num_classes <= IGNORE_LABEL:
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
        lut[IGNORE_LABEL] = IGNORE_LABEL
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
                f"nor the ignore value {IGNORE_LABEL}"
            )
        return mapped

    def clip_features(self, images: torch.Tensor) -> torch.Tensor:
        """``Fc``: ``(B, 3, H, W)`` 0..255 RGB -> ``(B, D, h, w)`` (student, decoder, CSH)."""
        return self.head(self.decoder_features(images))  # (B, D, h, w)

    # ------------------------------------------------------------------------------------ train
    def forward_train(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        iteration: int,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training losses of the criterion, already weighted (their sum is ``L``).

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
        if self.teacher is None or self.criterion is None:
            raise RuntimeError("ChimeraSegModel.forward_train needs a teacher and a criterion")
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
        # The teacher runs in float32 under AMP too: its features decide the pseudo masks, and a
        # bf16 teacher changes them (docs/GPU.md, 'Mixed precision and the pseudo masks').
        with float32_island(images.device):
            teacher_out = self.teacher(images.float())
        pseudo = generate_pseudo_masks(
            mapped,
            teacher_out.dense,
            num_seen=self.num_seen,
            mode=self.setting,
            seen_text=self.seen_text,
            unseen_text=self.unseen_text,
            config=self.pseudo_mask_config,
            valid=valid,
        )
        size = tuple(features.shape[-2:])
        labels_at_features = downsample_labels(pseudo.labels, size)  # (B, h, w)
        protos = prototype_table(
            features, labels_at_features, num_seen=self.num_seen, latent_start=pseudo.latent_start
        )
        classifier_text = self.seen_text  # (Ns, D)
        if self.setting == "transductive":
            classifier_text = torch.cat([self.seen_text, self.unseen_text])  # (Ns + Nu, D)
        outputs = TrainingOutputs(
            features=features,
            cls=teacher_out.cls,
            pseudo_labels=pseudo.labels,
            prototypes=protos,
            classifier_text=classifier_text,
            seen_text=self.seen_text,
            logit_tau=self.logit_tau,
            # a position is valid when >= half of its pixels are
            valid=None if valid is None else cell_fraction(valid, size) >= 0.5,
        )
        return self.criterion(outputs, iteration)

    # ------------------------------------------------------------------------------------- test
    def forward_test(
        self,
        images: torch.Tensor,
        vocabulary_embeddings: torch.Tensor,
        options: InferenceConfig | None = None,
        upsample: bool = True,
    ) -> torch.Tensor:
        """Unbiased cosine logits over any vocabulary (no CLIP image encoder is run).

        Call under ``torch.inference_mode()`` for speed: without autograd the CSH and the cosine
        run over chunks of positions (exact, see
        :meth:`~chimeraseg.modeling.csh.CLIPSemanticHead.map_residual_rows`) and the logits are
        upsampled image by image. The γ bias of unseen classes is the evaluator's
        (:func:`~chimeraseg.evaluation.gamma_sweep.biased_argmax`).

        Args:
            images: ``(B, 3, H, W)`` float RGB 0..255.
            vocabulary_embeddings: ``(N, D)`` text embeddings ``A``.
            options: mode, window, head downsampling, chunk size; None = ``self.inference``.
            upsample: False = whole-image mode returns the logits at the head's resolution
                ``(B, N, h, w)``, for a caller that resamples once to its own output size
                (:func:`~chimeraseg.modeling.inference.resize_logits`); sliding windows are
                always stitched at full resolution.

        Returns:
            ``(B, N, H, W)`` logits ``cos(Fc, A)/τ`` (``(B, N, h, w)`` as described above).
        """
        text = F.normalize(vocabulary_embeddings.float(), dim=-1)  # (N, D)
        if text.dim() != 2 or text.shape[1] != self.head.embed_dim:
            raise ValueError(
                f"vocabulary_embeddings {tuple(vocabulary_embeddings.shape)} must be "
                f"(N, {self.head.embed_dim})"
            )
        options = options or self.inference
        tau = self.logit_tau

        def residual_to_logits(residual: torch.Tensor) -> torch.Tensor:
            """``Fres`` rows ``(..., Dv)`` -> cosine logits ``(..., N)``."""
            tokens = self.head.proj(residual)  # (..., D)
            # Under a lower-precision autocast the cosine stays float32: unit vectors and their
            # dot products decide the argmax between close classes. LayerNorm and BatchNorm keep
            # float32 weights and running statistics and accumulate in float32; the softmax /
            # argmax of the evaluator and the demo run on these float32 logits.
            with torch.autocast(residual.device.type, enabled=False):
                return (F.normalize(tokens.float(), dim=-1) @ text.t()) / tau

        def logits_fn(images: torch.Tensor) -> torch.Tensor:  # (B, 3, H', W') -> (B, N, h, w)
            features = self._features_fn(options.compile)(images, options.head_downsample)
            logits = self.head.map_residual_rows(features, residual_to_logits, options.chunk_tokens)
            return logits.permute(0, 3, 1, 2)  # (B, N, h, w)

        amp = torch.autocast(
            images.device.type, dtype=options.precision, enabled=options.precision is not None
        )
        with amp:
            if options.mode == "slide":
                return slide_inference(logits_fn, images, options.slide_crop, options.slide_stride)
            return whole_inference(logits_fn, images) if upsample else logits_fn(images)

    def _features_fn(self, compiled: bool) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """:meth:`decoder_features`, or its ``torch.compile`` (made once, kept on the model)."""
        if not compiled:
            return self.decoder_features
        if "_compiled_features" not in self.__dict__:
            self.__dict__["_compiled_features"] = torch.compile(self.decoder_features)
        return self.__dict__["_compiled_features"]

    def decoder_features(self, images: torch.Tensor, downsample: int = 1) -> torch.Tensor:
        """Student features ``F`` (the decoder output the CSH takes): ``(B, 3, H, W)`` 0..255 ->
        ``(B, E, h/k, w/k)``.

        ``downsample = k > 1`` average-pools ``k x k`` with ``ceil_mode`` (inexact option).
        """
        x = (images - self.pixel_mean) / self.pixel_std
        features = self.decoder(self.backbone(x))  # (B, E, h, w)
        if downsample == 1:
            return features
        return F.avg_pool2d(features, downsample, ceil_mode=True)  # (B, E, h/k, w/k)


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
