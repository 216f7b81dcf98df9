"""Train and evaluate Chimera-Seg on the synthetic world in plain PyTorch, in a minute or two.

The test suite's proof of zero-shot transfer runs here, without detectron2: the same model
(``ChimeraSegModel``: MiT student, CSH, teacher, pseudo masks, SGD, SAM), a short schedule, and
the generalized zero-shot metrics over the dataset's validation split. The detectron2 trainer
(``tools/train_net.py``, ``make demo``) adds its mapper's photometric distortion and category-area
crop constraint; this loop keeps random rescale, crop and flip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg import IGNORE_LABEL
from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.io import read_image, read_label
from chimeraseg.data.splits import get_split
from chimeraseg.data.synthetic import LABEL_DIRNAME, SPLIT_DIRS
from chimeraseg.data.zero_shot import mask_unseen
from chimeraseg.evaluation.gamma_sweep import biased_argmax, unseen_class_mask
from chimeraseg.evaluation.metrics import confusion_matrix, zero_shot_metrics
from chimeraseg.modeling import (
    ChimeraSegModel,
    ChimeraSegSettings,
    HeadSettings,
    LossSettings,
    PseudoMaskConfig,
    StudentSettings,
    build_chimeraseg_model,
)

__all__ = [
    "QuickRunConfig",
    "build_model",
    "evaluate",
    "load_split",
    "model_settings",
    "quick_run",
    "train",
]


@dataclass(frozen=True)
class QuickRunConfig:
    """Schedule and model options (defaults follow ``configs/synthetic``'s MiT-B0 config).

    Attributes:
        backbone: student backbone name.
        iterations: optimiser steps.
        batch_size: images per step (SGD and SAM need at least 2).
        crop: square training crop side.
        scale_range: random rescale of the image's short side relative to ``base_short_side``.
        base_short_side: reference short side of the rescale.
        lr: AdamW learning rate of the backbone (decoder and CSH: ×10).
        weight_decay: AdamW weight decay.
        warmup: linear warm-up steps, then poly (power 1) decay.
        k_init: SGD's initial K (decreasing by ``k_step`` per step).
        k_step: SGD's K decrease per step.
        sgd_weight: weight of the SGD loss (0 disables it).
        sam_weight: weight of the SAM loss (0 disables it).
        sam_tau_c: SAM's text temperature; None = the CLIP's own (``1 / exp(logit_scale)``).
        pseudo_masks: latent pseudo masks on (False: ignore pixels stay ignored).
        vencoder_blocks: CLIP blocks in the CSH's VEncoder (0 = none, Table VIII).
        templates: prompt templates of the text embeddings.
        gamma: calibration added to unseen logits at evaluation.
        seed: seed of weights, data order, augmentation and Gumbel noise.
    """

    backbone: str = "mit_b0"
    iterations: int = 300
    batch_size: int = 4
    crop: int = 128
    scale_range: tuple[float, float] = (0.8, 1.6)
    base_short_side: int = 160
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup: int = 20
    k_init: int = 600
    k_step: float = 1.8
    sgd_weight: float = 1.0
    sam_weight: float = 0.5
    sam_tau_c: float | None = None
    pseudo_masks: bool = True
    vencoder_blocks: int = 1
    templates: str = "zegclip15"
    gamma: float = 0.5
    seed: int = 0


def load_split(dataset_dir: str, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(image (H, W, 3) uint8 RGB, label (H, W) uint8)]`` of a synthetic-layout split."""
    names = get_split("synthetic").class_names
    image_dir = os.path.join(dataset_dir, SPLIT_DIRS[split])
    label_dir = os.path.join(dataset_dir, LABEL_DIRNAME, SPLIT_DIRS[split])
    samples = []
    for file in sorted(os.listdir(image_dir)):
        stem = os.path.splitext(file)[0]
        image = np.array(read_image(os.path.join(image_dir, file)))  # writable copy
        label = read_label(os.path.join(label_dir, stem + ".png"), len(names), image.shape[:2])
        samples.append((image, label))
    return samples


def model_settings(config: QuickRunConfig) -> ChimeraSegSettings:
    """The model settings of a quick run: the defaults with the run's own options."""
    defaults = ChimeraSegSettings()
    losses = LossSettings(
        sgd=replace(defaults.losses.sgd, k_init=config.k_init, k_step=config.k_step),
        sam=replace(defaults.losses.sam, tau_c=config.sam_tau_c),
        seed=config.seed,
    ).with_weights(loss_sgd=config.sgd_weight, loss_sam=config.sam_weight)
    return replace(
        defaults,
        student=StudentSettings(backbone=config.backbone),
        head=HeadSettings(vencoder_blocks=config.vencoder_blocks),
        losses=losses,
        pseudo_masks=PseudoMaskConfig() if config.pseudo_masks else PseudoMaskConfig(max_regions=0),
    )


def build_model(clip_model: nn.Module, config: QuickRunConfig) -> ChimeraSegModel:
    """The Chimera-Seg model for the synthetic split, with ``clip_model`` as teacher and text."""
    split = get_split("synthetic")
    text = encode_class_names(clip_model, list(split.class_names), config.templates)  # (N, D)
    torch.manual_seed(config.seed)
    return build_chimeraseg_model(
        model_settings(config),
        clip_model=clip_model,
        class_text=text,
        seen_ids=split.seen,
        unseen_ids=split.unseen,
    )


def _augment(
    image: np.ndarray, label: np.ndarray, config: QuickRunConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random rescale, crop (padding 255 / invalid) and flip of one sample.

    Returns:
        ``(3, C, C)`` float 0..255 image, ``(C, C)`` long label, ``(C, C)`` bool valid pixels.
    """
    h, w = label.shape
    ratio = rng.uniform(*config.scale_range) * config.base_short_side / min(h, w)
    size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)[0]
    lab = torch.from_numpy(label)[None, None].float()
    lab = F.interpolate(lab, size=size, mode="nearest")[0, 0].long()  # (h', w')
    c = config.crop
    pad_h, pad_w = max(0, c - size[0]), max(0, c - size[1])
    valid = torch.ones(size, dtype=torch.bool)
    if pad_h or pad_w:
        img = F.pad(img, (0, pad_w, 0, pad_h))
        lab = F.pad(lab, (0, pad_w, 0, pad_h), value=IGNORE_LABEL)
        valid = F.pad(valid, (0, pad_w, 0, pad_h), value=False)
    y = int(rng.integers(0, lab.shape[0] - c + 1))
    x = int(rng.integers(0, lab.shape[1] - c + 1))
    img, lab, valid = (
        img[:, y : y + c, x : x + c],
        lab[y : y + c, x : x + c],
        valid[y : y + c, x : x + c],
    )
    if rng.random() < 0.5:
        img, lab, valid = img.flip(-1), lab.flip(-1), valid.flip(-1)
    return img, lab, valid


def _optimizer(model: ChimeraSegModel, config: QuickRunConfig) -> torch.optim.Optimizer:
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for m in (model.decoder, model.head) for p in m.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": backbone, "lr": config.lr}, {"params": head, "lr": 10 * config.lr}],
        weight_decay=config.weight_decay,
    )


def train(
    model: ChimeraSegModel,
    samples: list[tuple[np.ndarray, np.ndarray]],
    config: QuickRunConfig,
) -> dict[str, float]:
    """Trains ``model`` in place on the zero-shot training labels (unseen pixels hidden).

    Returns:
        The last step's losses.
    """
    unseen = get_split("synthetic").unseen
    samples = [(image, mask_unseen(label, unseen)) for image, label in samples]
    rng = np.random.default_rng([config.seed, 7])
    optimizer = _optimizer(model, config)
    base = [g["lr"] for g in optimizer.param_groups]
    model.train()
    losses: dict[str, torch.Tensor] = {}
    for it in range(config.iterations):
        factor = (it + 1) / config.warmup if it < config.warmup else 1 - it / config.iterations
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * factor
        index = rng.choice(len(samples), config.batch_size, replace=False)
        images, labels, valid = zip(*(_augment(*samples[i], config, rng) for i in index))
        losses = model.forward_train(
            torch.stack(images), torch.stack(labels), it, valid=torch.stack(valid)
        )
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


@torch.inference_mode()
def evaluate(
    model: ChimeraSegModel,
    clip_model: nn.Module,
    samples: list[tuple[np.ndarray, np.ndarray]],
    config: QuickRunConfig,
) -> dict[str, float]:
    """Generalized zero-shot metrics (all classes in one vocabulary, γ on unseen logits)."""
    split = get_split("synthetic")
    names = list(split.class_names)
    text = encode_class_names(clip_model, names, config.templates)  # (N, D)
    unseen_mask = unseen_class_mask(len(names), split.unseen)
    model.eval()
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    for image, label in samples:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        logits = model.forward_test(x, text)[0]  # (N, H, W)
        prediction = biased_argmax(logits, unseen_mask, config.gamma).numpy()  # (H, W)
        conf += confusion_matrix(prediction, label, len(names))
    return zero_shot_metrics(conf, split.seen, split.unseen, names)


def quick_run(clip_model: nn.Module, dataset_dir: str, config: QuickRunConfig) -> dict[str, float]:
    """Builds, trains and evaluates; returns the metrics (percent) and the last losses."""
    model = build_model(clip_model, config)
    losses = train(model, load_split(dataset_dir, "train"), config)
    metrics = evaluate(model, clip_model, load_split(dataset_dir, "val"), config)
    return {**metrics, **{f"last_{k}": v for k, v in losses.items()}}
