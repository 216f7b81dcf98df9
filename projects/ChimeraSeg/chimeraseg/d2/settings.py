"""``settings_from_config``: the one translation of a yacs config into :class:`ChimeraSegSettings`.

Every ``MODEL.CHIMERASEG.*``, ``MODEL.PIXEL_*`` and inference ``TEST.*`` key the model reads is
read here and nowhere else; the keys' defaults come from the settings objects
(``chimeraseg/d2/config.py``), so both always agree.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode

from chimeraseg.d2.amp import amp_precision
from chimeraseg.d2.backbone import imagenet_init, student_from_config
from chimeraseg.modeling.inference import InferenceConfig
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig
from chimeraseg.modeling.settings import (
    ChimeraSegSettings,
    HeadSettings,
    LossSettings,
    SAMSettings,
    SegLossSettings,
    SGDSettings,
    StudentSettings,
)

__all__ = ["inference_config", "inference_precision", "settings_from_config"]

# The built-in losses and the config key of each one's weight.
_BUILT_IN_WEIGHT_KEYS = {
    "loss_seg": "MODEL.CHIMERASEG.SEG_LOSS.WEIGHT",
    "loss_sgd": "MODEL.CHIMERASEG.SGD.WEIGHT",
    "loss_sam": "MODEL.CHIMERASEG.SAM.WEIGHT",
}


def settings_from_config(cfg: CfgNode) -> ChimeraSegSettings:
    """The model settings of a (validated) ChimeraSeg config.

    Args:
        cfg: a config from :func:`chimeraseg.d2.config.get_chimeraseg_cfg`.
    """
    m = cfg.MODEL.CHIMERASEG
    return ChimeraSegSettings(
        student=_student_settings(cfg),
        head=_head_settings(cfg),
        losses=_loss_settings(cfg),
        pseudo_masks=_pseudo_mask_config(cfg),
        inference=inference_config(cfg),
        setting=m.SETTING,
        logit_tau=m.LOGIT_TAU,
        pixel_mean=tuple(cfg.MODEL.PIXEL_MEAN),
        pixel_std=tuple(cfg.MODEL.PIXEL_STD),
        teacher=m.BUILD_TEACHER,
        teacher_dense_path=m.TEACHER_DENSE_PATH,
    )


def _student_settings(cfg: CfgNode) -> StudentSettings:
    b, d = cfg.MODEL.CHIMERASEG.BACKBONE, cfg.MODEL.CHIMERASEG.DECODER
    return StudentSettings(
        backbone=student_from_config(cfg),
        drop_path_rate=b.DROP_PATH_RATE,
        weights=imagenet_init(cfg),  # "" when MODEL.WEIGHTS replaces it
        decoder_dropout=d.DROPOUT,
    )


def _head_settings(cfg: CfgNode) -> HeadSettings:
    c = cfg.MODEL.CHIMERASEG.CSH
    return HeadSettings(
        mlp_layers=c.MLP_LAYERS,
        vencoder_blocks=c.VENCODER_BLOCKS,
        use_value=c.USE_VALUE,
        use_ffn=c.USE_FFN,
        trainable_value=c.TRAINABLE_VALUE,
        trainable_ffn=c.TRAINABLE_FFN,
        norm=c.NORM,
        residual=c.RESIDUAL,
        proj=c.PROJ,
    )


def _loss_settings(cfg: CfgNode) -> LossSettings:
    m = cfg.MODEL.CHIMERASEG
    return LossSettings(
        weights={
            **{name: _config_value(cfg, key) for name, key in _BUILT_IN_WEIGHT_KEYS.items()},
            **_extra_loss_weights(m.EXTRA_LOSS_WEIGHTS),
        },
        seg=SegLossSettings(
            ce_weight=m.SEG_LOSS.CE_WEIGHT,
            focal_weight=m.SEG_LOSS.FOCAL_WEIGHT,
            focal_gamma=m.SEG_LOSS.FOCAL_GAMMA,
        ),
        sgd=SGDSettings(k_init=m.SGD.K_INIT, k_step=m.SGD.K_STEP, mode=m.SGD.MODE, tau=m.SGD.TAU),
        sam=SAMSettings(tau_f=m.SAM.TAU_F, tau_c=m.SAM.TAU_C),
        gather=m.SGD.GATHER,
        seed=cfg.SEED if cfg.SEED >= 0 else None,
    )


def _config_value(cfg: CfgNode, key: str) -> float:
    """The value of a dotted key, ``"MODEL.CHIMERASEG.SAM.WEIGHT"``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _extra_loss_weights(pairs: list) -> dict[str, float]:
    """``MODEL.CHIMERASEG.EXTRA_LOSS_WEIGHTS`` ``[[name, weight], ...]`` as a dict.

    Raises:
        ValueError: an entry is not a ``[name, number]`` pair, names a loss twice, or names a
            built-in loss (which has its own ``*.WEIGHT`` key); the message quotes the entry.
    """
    key = "MODEL.CHIMERASEG.EXTRA_LOSS_WEIGHTS"
    weights: dict[str, float] = {}
    for pair in pairs:
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
        if not ok or isinstance(pair[1], bool) or not isinstance(pair[1], (int, float)):
            raise ValueError(f"{key}: {pair!r} is not a [name, weight] pair, e.g. ['loss_x', 0.5]")
        name, weight = pair
        if name in _BUILT_IN_WEIGHT_KEYS:
            raise ValueError(f"{key}: {name!r} has its own key, {_BUILT_IN_WEIGHT_KEYS[name]}")
        if name in weights:
            raise ValueError(f"{key}: {name!r} is given twice")
        weights[name] = float(weight)
    return weights


def _pseudo_mask_config(cfg: CfgNode) -> PseudoMaskConfig:
    p = cfg.MODEL.CHIMERASEG.PSEUDO_MASKS
    max_regions = None if p.MAX_REGIONS < 0 else p.MAX_REGIONS
    if not p.ENABLED:
        max_regions = 0  # no latent regions: ignore pixels stay ignored
    return PseudoMaskConfig(
        scales=tuple(p.WINDOW_SCALES),
        kmeans_iters=p.KMEANS_ITERS,
        merge_threshold=p.MERGE_THRESHOLD,
        min_area=p.MIN_AREA,
        max_regions=max_regions,
        region_ignore_fraction=p.REGION_IGNORE_FRACTION,
        seed_region_fraction=p.SEED_REGION_FRACTION,
        unseen_threshold=p.UNSEEN_THRESHOLD,
        unseen_temperature=p.UNSEEN_TEMPERATURE,
    )


def inference_config(cfg: CfgNode) -> InferenceConfig:
    """The ``TEST.*`` inference options as one :class:`InferenceConfig`."""
    return InferenceConfig(
        mode=cfg.TEST.MODE,
        slide_crop=tuple(cfg.TEST.SLIDE_CROP_SIZE),
        slide_stride=tuple(cfg.TEST.SLIDE_STRIDE),
        head_downsample=cfg.TEST.CSH_DOWNSAMPLE,
        chunk_tokens=cfg.TEST.CSH_CHUNK_TOKENS,
        precision=inference_precision(cfg),
        compile=bool(cfg.TEST.COMPILE),
    )


def inference_precision(cfg: CfgNode) -> torch.dtype | None:
    """The autocast dtype of ``TEST.AMP`` (None when off); float16 needs a CUDA device."""
    return amp_precision(cfg, "TEST") if cfg.TEST.AMP.ENABLED else None
