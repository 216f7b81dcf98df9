"""Checks of a merged ChimeraSeg config: enumerated choices, value ranges, removed keys.

Every failure names the key and the value. :func:`validate_chimeraseg_config` runs in
:func:`chimeraseg.d2.config.get_chimeraseg_cfg` and again when the model is built.
"""

from __future__ import annotations

import functools
import math

from detectron2.config import CfgNode as CN

from chimeraseg.clip.teacher import DENSE_PATHS
from chimeraseg.d2.amp import AMP_PRECISIONS
from chimeraseg.d2.gpu_switches import FLOAT32_PRECISIONS
from chimeraseg.modeling.csh import NORM_TYPES, PROJ_TYPES
from chimeraseg.modeling.inference import INFERENCE_MODES
from chimeraseg.modeling.pseudo_masks import SETTINGS
from chimeraseg.modeling.settings import K_SCHEDULES

__all__ = [
    "explain_removed_key",
    "small_batch_warning",
    "validate_chimeraseg_config",
    "validate_ranges",
]

# Keys of earlier versions, with the reason they are gone (named when an old YAML sets one).
_REMOVED_KEYS = {
    "MODEL.CHIMERASEG.IGNORE_VALUE": "the ignore label is fixed at 255 (chimeraseg.IGNORE_LABEL)",
    "MODEL.CHIMERASEG.FOLD_PROJECTION": "the folded-projection inference path was removed",
    "SOLVER.POLY_LR_CONSTANT_ENDING": "the poly schedule is fvcore's "
    "PolynomialDecayParamScheduler, which decays to 0 (the floor was never used)",
}

# Allowed values of the enumerated keys, checked by ``validate_chimeraseg_config``.
# The tuples live with the code that implements each choice.
_CHOICES: dict[str, tuple[str, ...]] = {
    "MODEL.CHIMERASEG.SETTING": SETTINGS,
    "MODEL.CHIMERASEG.TEACHER_DENSE_PATH": DENSE_PATHS,
    "MODEL.CHIMERASEG.CSH.NORM": NORM_TYPES,
    "MODEL.CHIMERASEG.CSH.PROJ": PROJ_TYPES,
    "MODEL.CHIMERASEG.SGD.MODE": K_SCHEDULES,
    "TEST.MODE": INFERENCE_MODES,
    "SOLVER.OPTIMIZER": ("ADAMW", "SGD"),
    "TEST.AMP.PRECISION": tuple(AMP_PRECISIONS),
    "FLOAT32_PRECISION": FLOAT32_PRECISIONS,
}


def _lookup(cfg: CN, dotted: str) -> object:
    """Returns ``cfg.A.B.C`` for ``"A.B.C"``."""
    return functools.reduce(getattr, dotted.split("."), cfg)


# Loss weights (and the focal exponent) must be finite and >= 0; temperatures (divisors of
# logits) finite and > 0.
_NUMBER_RULES: dict[str, str] = {
    **dict.fromkeys(("SGD.WEIGHT", "SAM.WEIGHT", "SGD.K_STEP", "SEG_LOSS.CE_WEIGHT"), ">= 0"),
    **dict.fromkeys(("SEG_LOSS.WEIGHT", "SEG_LOSS.FOCAL_WEIGHT", "SEG_LOSS.FOCAL_GAMMA"), ">= 0"),
    **dict.fromkeys(("LOGIT_TAU", "SGD.TAU", "SAM.TAU_F", "SAM.TAU_C"), "> 0"),
    "PSEUDO_MASKS.UNSEEN_TEMPERATURE": "> 0",
}
# Keys whose None means "from the CLIP" (checked as numbers otherwise).
_CLIP_DEFAULTED = ("SAM.TAU_C",)
# Integer keys: inclusive (low, high) bounds, None = no upper bound.
_INT_RANGES: dict[str, tuple[int, int | None]] = {
    "MODEL.CHIMERASEG.SGD.K_INIT": (1, None),
    "MODEL.CHIMERASEG.CSH.VENCODER_BLOCKS": (0, 3),
    "MODEL.CHIMERASEG.CSH.MLP_LAYERS": (1, 2),
    "TEST.CSH_CHUNK_TOKENS": (0, None),
    "TEST.CSH_DOWNSAMPLE": (1, None),
}


def _validate_numbers(cfg: CN) -> None:
    """Loss weights >= 0, temperatures > 0, integer keys in range (naming key and value)."""
    for name, rule in _NUMBER_RULES.items():
        key, value = f"MODEL.CHIMERASEG.{name}", _lookup(cfg, f"MODEL.CHIMERASEG.{name}")
        if value is None and name in _CLIP_DEFAULTED:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value)) or (value < 0 if rule == ">= 0" else value <= 0):
            raise ValueError(f"config key {key} = {value!r} must be a finite number {rule}")
    for key, (low, high) in _INT_RANGES.items():
        value = _lookup(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"config key {key} = {value!r} must be an int >= {low}")
        if high is not None and value > high:
            raise ValueError(f"config key {key} = {value!r} must be an int in {low}..{high}")


def small_batch_warning(cfg: CN, world_size: int = 1) -> str | None:
    """The warning for a batch too small for SGD and SAM, or None.

    Both losses contrast each image's CLIP CLS token with the other images of the batch
    (gathered across processes when ``MODEL.CHIMERASEG.SGD.GATHER``): with one image they are
    identically 0.
    """
    m, batch = cfg.MODEL.CHIMERASEG, cfg.SOLVER.IMS_PER_BATCH
    contrast = batch if m.SGD.GATHER else batch // max(world_size, 1)
    if (m.SGD.WEIGHT == 0 and m.SAM.WEIGHT == 0) or contrast >= 2:
        return None
    where = f"SOLVER.IMS_PER_BATCH = {batch}"
    if not m.SGD.GATHER:
        where += f" over {world_size} processes with MODEL.CHIMERASEG.SGD.GATHER False"
    return (
        f"{where}: the SGD loss (MODEL.CHIMERASEG.SGD.WEIGHT = {m.SGD.WEIGHT}) and the SAM loss "
        f"(MODEL.CHIMERASEG.SAM.WEIGHT = {m.SAM.WEIGHT}) are identically 0; both need a global "
        "batch of at least 2 images (the paper uses 16)"
    )


def validate_chimeraseg_config(cfg: CN) -> None:
    """Checks enumerated keys and value ranges (loss weights >= 0, temperatures > 0, ...).

    Called by :func:`get_chimeraseg_cfg` and again when the model is built.

    Raises:
        ValueError: naming the offending key, its value and the allowed values.
    """
    for key, choices in _CHOICES.items():
        value = _lookup(cfg, key)
        if value not in choices:
            raise ValueError(f"config key {key} = {value!r} is not one of {list(choices)}")
    _validate_numbers(cfg)
    validate_ranges(cfg)
    if cfg.MODEL.CHIMERASEG.SETTING == "transductive" and cfg.TEST.GAMMA != 0.0:
        # Paper §III-D: the unseen-logit bias calibrates the inductive setting only.
        raise ValueError(
            f"config key TEST.GAMMA = {cfg.TEST.GAMMA} must be 0 when MODEL.CHIMERASEG.SETTING = "
            "'transductive' (the unseen bias is for the inductive setting; TEST.GAMMA_SWEEP may "
            "still list other values)"
        )


def explain_removed_key(message: str) -> str:
    """Appends why a key is gone when ``message`` names a key of :data:`_REMOVED_KEYS`."""
    for key, reason in _REMOVED_KEYS.items():
        if message.rstrip().endswith(key):
            return f"{message} ({key} was removed: {reason})"
    return message


# Start-up ranges of keys whose bad values otherwise fail late or silently: the pseudo-mask
# generator (a threshold of 5.0 never labels an unseen pixel), the schedule (MAX_ITER 0 divides
# by zero in the LR schedule) and the test-time bias (nan surfaces only at the first evaluation).
# (low, high, kind): kind "int", "float" (finite) or "float>" (finite, strictly above low).
_RANGES: dict[str, tuple[float, float | None, str]] = {
    "MODEL.CHIMERASEG.PSEUDO_MASKS.KMEANS_ITERS": (0, None, "int"),
    "MODEL.CHIMERASEG.PSEUDO_MASKS.MIN_AREA": (0, None, "int"),
    "MODEL.CHIMERASEG.PSEUDO_MASKS.MAX_REGIONS": (-1, 254, "int"),  # -1 = no cap besides 255
    "MODEL.CHIMERASEG.PSEUDO_MASKS.MERGE_THRESHOLD": (-1.0, 1.0, "float"),  # a cosine
    "MODEL.CHIMERASEG.PSEUDO_MASKS.REGION_IGNORE_FRACTION": (0.0, 1.0, "float"),
    "MODEL.CHIMERASEG.PSEUDO_MASKS.SEED_REGION_FRACTION": (0.0, 1.0, "float"),
    "MODEL.CHIMERASEG.PSEUDO_MASKS.UNSEEN_THRESHOLD": (0.0, 1.0, "float"),  # a softmax score
    "MODEL.CHIMERASEG.PSEUDO_MASKS.UNSEEN_TEMPERATURE": (0.0, None, "float>"),
    "SOLVER.MAX_ITER": (1, None, "int"),
    "SOLVER.IMS_PER_BATCH": (1, None, "int"),
    "SOLVER.CHECKPOINT_PERIOD": (1, None, "int"),
    "SOLVER.WARMUP_ITERS": (0, None, "int"),
    "SOLVER.BASE_LR": (0.0, None, "float>"),
    "SOLVER.POLY_LR_POWER": (0.0, None, "float"),
    "TEST.EVAL_PERIOD": (0, None, "int"),
    "TEST.GAMMA": (-math.inf, None, "float"),
    "METRICS_FSYNC_SECONDS": (0.0, None, "float"),
}


def _range_error(key: str, value: object, rule: tuple[float, float | None, str]) -> str | None:
    """Why ``value`` breaks ``rule``, or None."""
    low, high, kind = rule
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number, not {type(value).__name__}"
    if kind == "int" and not isinstance(value, int):
        return "must be an int"
    if kind != "int" and not math.isfinite(value):
        return "must be a finite number"
    too_low = value <= low if kind == "float>" else value < low
    if too_low or (high is not None and value > high):
        bound = f"> {low}" if kind == "float>" else f">= {low}" if low > -math.inf else ""
        return "must be " + (f"in [{low}, {high}]" if high is not None else bound)
    return None


def validate_ranges(cfg: CN) -> None:
    """Range-checks the pseudo-mask, schedule and test-time keys of :data:`_RANGES` at start-up.

    Raises:
        ValueError: naming the key, its value and the range.
    """
    for key, rule in _RANGES.items():
        reason = _range_error(key, _lookup(cfg, key), rule)
        if reason:
            raise ValueError(f"config key {key} = {_lookup(cfg, key)!r} {reason}")
    scales = list(cfg.MODEL.CHIMERASEG.PSEUDO_MASKS.WINDOW_SCALES)
    if not scales or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in scales):
        raise ValueError(
            f"config key MODEL.CHIMERASEG.PSEUDO_MASKS.WINDOW_SCALES = {scales!r} must list "
            "positive ints"
        )
    bad = [g for g in cfg.TEST.GAMMA_SWEEP if _range_error("", g, (-math.inf, None, "float"))]
    if bad:
        raise ValueError(f"config key TEST.GAMMA_SWEEP holds {bad}: every value must be finite")
