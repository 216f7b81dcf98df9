"""Settings of the Chimera-Seg model: one frozen object per part, each default written once here.

:class:`ChimeraSegSettings` holds the whole method: the student (:class:`StudentSettings`), the
CLIP Semantic Head (:class:`HeadSettings`), the losses (:class:`LossSettings` with
:class:`SegLossSettings`, :class:`SGDSettings`, :class:`SAMSettings`), the pseudo masks
(:class:`~chimeraseg.modeling.pseudo_masks.PseudoMaskConfig`) and inference
(:class:`~chimeraseg.modeling.inference.InferenceConfig`). Every constructor below the builder
(:func:`~chimeraseg.modeling.build.build_chimeraseg_model`) takes its part without defaults of
its own; the detectron2 config (``chimeraseg/d2/config.py``) reads its defaults from here, and
``settings_from_config`` there turns a yacs config into one of these objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from chimeraseg.clip.teacher import DENSE_PATHS
from chimeraseg.modeling.csh import NORM_TYPES, PROJ_TYPES
from chimeraseg.modeling.inference import InferenceConfig
from chimeraseg.modeling.pseudo_masks import SETTINGS, PseudoMaskConfig

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAPER_LOSS_WEIGHTS",
    "K_SCHEDULES",
    "ChimeraSegSettings",
    "HeadSettings",
    "LossSettings",
    "SAMSettings",
    "SGDSettings",
    "SegLossSettings",
    "StudentSettings",
]

# Student normalisation: ImageNet RGB statistics on 0..255 pixels.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
K_SCHEDULES = ("decrease", "none", "increase")  # Table X
# Log name -> weight of the paper's losses; w_sgd = 1 and w_sam = 0.5 are Table XII's best row
# (docs/METHOD.md, 'Total loss'). Further losses join through ``register_loss``.
PAPER_LOSS_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"loss_seg": 1.0, "loss_sgd": 1.0, "loss_sam": 0.5}
)


def _check(owner: str, values: Mapping[str, float], *, positive: bool) -> None:
    """Raises unless every value is finite and > 0 (``positive``) or >= 0."""
    for name, value in values.items():
        bad = not math.isfinite(value) or (value <= 0 if positive else value < 0)
        if bad:
            bound = "> 0" if positive else ">= 0"
            raise ValueError(f"{owner}: {name}={value!r} must be finite and {bound}")


def _check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {name}={value!r} is not one of {choices}")


@dataclass(frozen=True)
class StudentSettings:
    """The student backbone and its SegFormer decoder.

    Attributes:
        backbone: registered student name (``"mit_b0"`` ... ``"mit_b5"``, ``"vit_b16"``); the
            decoder width ``E`` follows from it (``student_decoder_dim``).
        drop_path_rate: largest stochastic-depth rate of the backbone.
        weights: ImageNet init of the backbone loaded strictly: a file, a hub-layout folder or a
            hub id such as ``nvidia/mit-b0`` (:mod:`chimeraseg.modeling.backbone.pretrained`);
            ``""`` = random init.
        decoder_dropout: dropout before the decoder output.
    """

    backbone: str = "mit_b0"
    drop_path_rate: float = 0.1
    weights: str = ""
    decoder_dropout: float = 0.1


@dataclass(frozen=True)
class HeadSettings:
    """The CLIP Semantic Head (Tables IV-IX).

    Attributes:
        mlp_layers: 1 (Linear E->Dv) or 2 (Linear E->Dv, GELU, Linear Dv->Dv).
        vencoder_blocks: number of last CLIP blocks in the VEncoder (0 = none, Table VIII).
        use_value: keep the VEncoder value branch (Table VI).
        use_ffn: keep the VEncoder FFN branch (Table VI).
        trainable_value: train the value branch (Table VII).
        trainable_ffn: train the FFN branch (Table VII).
        norm: ``"BN" | "GN" | "LN_clip" | "LN" | "none"`` (Table IX).
        residual: ``Fres = Fp + Fbn`` (else ``Fbn``) (Table IV).
        proj: ``"frozen"`` CLIP copy, ``"learnable"`` CLIP init, ``"he"`` Kaiming init (Table V).
    """

    mlp_layers: int = 1
    vencoder_blocks: int = 1
    use_value: bool = True
    use_ffn: bool = True
    trainable_value: bool = False
    trainable_ffn: bool = False
    norm: str = "BN"
    residual: bool = True
    proj: str = "frozen"

    def __post_init__(self) -> None:
        _check_choice("CLIPSemanticHead", "norm", self.norm, NORM_TYPES)
        _check_choice("CLIPSemanticHead", "proj", self.proj, PROJ_TYPES)
        if self.mlp_layers not in (1, 2):
            raise ValueError(f"CLIPSemanticHead: mlp_layers={self.mlp_layers} must be 1 or 2")


@dataclass(frozen=True)
class SegLossSettings:
    """``Lseg``: cross-entropy plus softmax focal loss (paper eq. 4).

    Attributes:
        ce_weight: weight of the cross-entropy term (0 skips it).
        focal_weight: weight of the focal term (0 skips it).
        focal_gamma: focusing parameter ``γ`` of the focal term.
    """

    ce_weight: float = 1.0
    focal_weight: float = 1.0
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        _check("segmentation loss", vars(self), positive=False)


@dataclass(frozen=True)
class SGDSettings:
    """Selective Global Distillation (paper §III-C; Tables X, XI).

    Attributes:
        k_init: K0 of the top-K schedule.
        k_step: change of K per iteration.
        mode: ``"decrease"`` (``K0 - k_step·t``), ``"none"`` (``K0``) or ``"increase"``.
        tau: temperature of InfoNCE and of the Gumbel softmax ``W`` (whose top-K does not
            depend on it).
    """

    k_init: int = 9000
    k_step: float = 0.1
    mode: str = "decrease"
    tau: float = 0.07

    def __post_init__(self) -> None:
        _check_choice("SelectiveGlobalDistillation", "mode", self.mode, K_SCHEDULES)
        if self.k_init < 1 or self.k_step < 0 or not self.tau > 0:
            raise ValueError(
                f"SelectiveGlobalDistillation: need k_init >= 1, k_step >= 0, tau > 0; got "
                f"k_init={self.k_init}, k_step={self.k_step}, tau={self.tau}"
            )


@dataclass(frozen=True)
class SAMSettings:
    """Semantic Alignment Module (paper §III-D, eq. 6).

    Attributes:
        tau_f: temperature of the prototype-to-CLS softmax ``P``.
        tau_c: temperature of the text-to-CLS softmax ``Q``; None = the CLIP's own learnt
            temperature ``1 / exp(logit_scale)`` (0.01 for OpenAI's CLIP, the paper's value),
            filled in by the builder, so ``Q`` is the CLIP's own zero-shot distribution.
    """

    tau_f: float = 0.07
    tau_c: float | None = None

    def __post_init__(self) -> None:
        temperatures = {"tau_f": self.tau_f}
        if self.tau_c is not None:
            temperatures["tau_c"] = self.tau_c
        _check("SAM", temperatures, positive=True)


@dataclass(frozen=True)
class LossSettings:
    """The training criterion: which losses run, their weights and their own settings.

    Attributes:
        weights: log name -> weight; every name must be registered (``register_loss``); a loss
            with weight 0 is not computed (its log entry is an exact 0).
        seg: settings of ``loss_seg``.
        sgd: settings of ``loss_sgd``.
        sam: settings of ``loss_sam``.
        gather: SGD and SAM use every process's CLS tokens as negatives.
        seed: seed of the Gumbel-noise generator (offset by the process rank); None = global RNG.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(PAPER_LOSS_WEIGHTS))
    seg: SegLossSettings = field(default_factory=SegLossSettings)
    sgd: SGDSettings = field(default_factory=SGDSettings)
    sam: SAMSettings = field(default_factory=SAMSettings)
    gather: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", {k: float(v) for k, v in self.weights.items()})
        _check("ChimeraSegCriterion", self.weights, positive=False)

    def with_weights(self, **weights: float) -> LossSettings:
        """A copy with some weights replaced or added (``loss_sam=0.0``)."""
        return replace(self, weights={**self.weights, **weights})


@dataclass(frozen=True)
class ChimeraSegSettings:
    """The whole model: one object per part plus the model's own settings.

    Attributes:
        student: backbone and decoder.
        head: the CLIP Semantic Head.
        losses: the criterion.
        pseudo_masks: the pseudo-mask generator.
        inference: how ``forward_test`` runs by default.
        setting: ``"inductive"`` or ``"transductive"`` (docs/METHOD.md, 'Pseudo masks').
        logit_tau: temperature ``τ`` of the cosine logits (training and inference).
        pixel_mean: student normalisation mean (on 0..255 RGB).
        pixel_std: student normalisation std.
        teacher: build the frozen CLIP teacher (training, similarity maps) or not (inference).
        teacher_dense_path: dense-feature path of the teacher (see ``CLIPTeacher``).
    """

    student: StudentSettings = field(default_factory=StudentSettings)
    head: HeadSettings = field(default_factory=HeadSettings)
    losses: LossSettings = field(default_factory=LossSettings)
    pseudo_masks: PseudoMaskConfig = field(default_factory=PseudoMaskConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    setting: str = "inductive"
    logit_tau: float = 0.07
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    teacher: bool = True
    teacher_dense_path: str = DENSE_PATHS[0]

    def __post_init__(self) -> None:
        _check_choice("ChimeraSegModel", "setting", self.setting, SETTINGS)
        _check_choice("CLIPTeacher", "teacher_dense_path", self.teacher_dense_path, DENSE_PATHS)
        _check("ChimeraSegModel", {"logit_tau": self.logit_tau}, positive=True)
        for name in ("pixel_mean", "pixel_std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"ChimeraSegModel: {name}={value} must hold 3 values")
            object.__setattr__(self, name, value)
