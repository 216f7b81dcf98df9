"""The cluster check's ``amp_pseudo_masks`` phase: pseudo masks of training steps under bf16 /
fp16 autocast compared with the float32 step's, pixel by pixel.

Each process takes the same first batches of its training stream through the training forward
(no backward), once in float32 and once under each autocast precision the device supports, and
records the pseudo labels the criterion receives (a forward pre-hook on it: exactly what the
losses train on). float32 runs twice: on a GPU, atomic adds make two float32 runs differ in their
last bits, and the pseudo masks may then differ on a few pixels whatever the precision. The check
passes when, on every rank, each precision's labels differ from float32's on at most twice as
many pixels as the two float32 runs differ on (so exactly none on the CPU) and agree on at least
:data:`MIN_AGREEMENT` of the pixels, and float32 labelled some latent region (an image without
one would make the comparison vacuous).
"""

from __future__ import annotations

from typing import Any

import torch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch import nn

__all__ = [
    "AMP_DTYPES",
    "AMP_PHASE",
    "MIN_AGREEMENT",
    "amp_assertions",
    "amp_phase",
    "amp_precisions",
    "compare_pseudo_masks",
    "pseudo_labels_of_step",
]

AMP_PHASE = "amp_pseudo_masks"
# Autocast precisions compared with float32 (each where the device supports it).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Fraction of pixels whose pseudo label under autocast must at least equal float32's (besides
# the float32 repeat rule): the teacher, the pseudo masks and their similarities run in float32
# whatever autocast is active, so a difference can only come from run-to-run atomics.
MIN_AGREEMENT = 0.999


def pseudo_labels_of_step(
    model: nn.Module, batch: list[dict[str, Any]], dtype: torch.dtype | None, seed: int = 0
) -> torch.Tensor:
    """``(B, H, W)`` pseudo labels the criterion receives in one training forward of ``batch``.

    Args:
        model: the ``ChimeraSeg`` meta-architecture in training mode (not DDP-wrapped).
        batch: the mapper's training dicts.
        dtype: autocast dtype, or None for float32.
        seed: torch seed set before the forward (the same draws for every precision).
    """
    captured: dict[str, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple) -> None:
        captured["labels"] = args[0].pseudo_labels.detach().clone()

    handle = model.model.criterion.register_forward_pre_hook(record)
    autocast = torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None)
    try:
        torch.manual_seed(seed)
        with torch.no_grad(), EventStorage(0), autocast:
            model(batch)
    finally:
        handle.remove()
    return captured["labels"]


def compare_pseudo_masks(
    model: nn.Module, batches: list[list[dict[str, Any]]], precisions: list[str]
) -> dict[str, Any]:
    """Per precision, the agreement of its pseudo labels with float32's over ``batches``.

    Returns:
        ``{"pixels", "latent_pixels_fp32", "fp32_repeat": {...}, "precisions": {name:
        {"agreement", "latent_agreement", "differing_pixels"}}}``; latent pixels are those
        float32 labels with a latent (or unseen) region, the ones the pseudo masks decide.
    """
    num_seen = model.model.num_seen
    fp32 = [pseudo_labels_of_step(model, batch, None, seed=i) for i, batch in enumerate(batches)]
    latent = [(labels >= num_seen) & (labels != 255) for labels in fp32]
    pixels, latent_pixels = sum(t.numel() for t in fp32), int(sum(m.sum() for m in latent))

    def agreement(dtype: torch.dtype | None) -> dict[str, Any]:
        equal = same_latent = 0
        for i, batch in enumerate(batches):
            agree = pseudo_labels_of_step(model, batch, dtype, seed=i) == fp32[i]
            equal += int(agree.sum())
            same_latent += int(agree[latent[i]].sum())
        return {
            "agreement": equal / pixels,
            "latent_agreement": same_latent / latent_pixels if latent_pixels else None,
            "differing_pixels": pixels - equal,
        }

    return {
        "pixels": pixels,
        "latent_pixels_fp32": latent_pixels,
        "fp32_repeat": agreement(None),
        "precisions": {name: agreement(AMP_DTYPES[name]) for name in precisions},
    }


def amp_precisions(device: str) -> list[str]:
    """The autocast precisions of :data:`AMP_DTYPES` that ``device`` ("cuda", "cpu") runs."""
    from chimeraseg.d2.cluster_check.measure import precision_skip_reason

    return [name for name in AMP_DTYPES if not precision_skip_reason(device, name)]


def amp_phase(plan: Any) -> dict[str, Any]:
    """This rank's record of the phase: the model of the check config, the first batches."""
    from chimeraseg.d2.cluster_check.phases import _phase_cfg
    from chimeraseg.d2.trainer import ChimeraSegTrainer

    cfg = _phase_cfg(plan, AMP_PHASE, [])
    precisions = amp_precisions(torch.device(cfg.MODEL.DEVICE).type)
    model = ChimeraSegTrainer.build_model(cfg).train()
    stream = iter(ChimeraSegTrainer.build_train_loader(cfg))
    batches = [next(stream) for _ in range(max(plan.amp_iterations, 1))]
    comparison = compare_pseudo_masks(model, batches, precisions)
    return {"phase": AMP_PHASE, "rank": comm.get_rank(), "batches": len(batches), **comparison}


def amp_assertions(ranks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The phase's assertions from every rank's record (rank 0 first)."""
    latent = [r["latent_pixels_fp32"] for r in ranks]
    out = [
        {
            "name": "float32 pseudo masks hold latent regions on every rank",
            "passed": all(n > 0 for n in latent),
            "detail": f"latent pixels per rank {latent}",
        }
    ]
    repeat = [r["fp32_repeat"]["differing_pixels"] for r in ranks]
    for name in ranks[0]["precisions"]:
        agreements = [r["precisions"][name]["agreement"] for r in ranks]
        differing = [r["precisions"][name]["differing_pixels"] for r in ranks]
        passed = all(
            d <= 2 * rep and a >= MIN_AGREEMENT for a, d, rep in zip(agreements, differing, repeat)
        )
        out.append(
            {
                "name": f"{name} pseudo masks = float32 pseudo masks (as two float32 runs)",
                "passed": passed,
                "detail": f"agreement per rank {[round(a, 6) for a in agreements]}, differing "
                f"pixels {differing} (two float32 runs: {repeat})",
            }
        )
    return out
