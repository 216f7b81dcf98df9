"""Contrastive training of the synthetic world's CLIP, and its zero-shot quality gate.

The model is a standard open_clip architecture given by a model-config JSON
(``configs/clip/chimeraseg-world-vit.json``) with open_clip's own tokenizer; the loss is the plain
symmetric CLIP loss. Captions name the classes an image shows (image level, no masks), written
with the same prompt templates that ChimeraSeg's synthetic config uses for its text embeddings.

Determinism: for a fixed config and thread count, training gives identical weights (fixed seeds,
no data-loader workers, a single process).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from chimeraseg.clip.loading import build_untrained_clip, resolve_model_name
from chimeraseg.clip.teacher import clip_pixel_stats
from chimeraseg.clip.templates import resolve_templates
from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.splits import get_split
from chimeraseg.world.clip_data import (
    WORLD_NAMESPACE,
    CaptionedPool,
    caption,
    render_held_out_patches,
    render_pool,
)

__all__ = [
    "WORLD_CLIP_MODEL_CONFIG",
    "WorldClipConfig",
    "WorldClipQualityError",
    "world_class_names",
    "train_world_clip",
    "zero_shot_report",
]

WORLD_CLIP_MODEL_CONFIG = "configs/clip/chimeraseg-world-vit.json"
_BATCH_STREAM = 2  # purpose id of the batch-sampling generator (see clip_data.world_rng)


@dataclass(frozen=True)
class WorldClipConfig:
    """What a world CLIP is trained from; every field is part of its cache key.

    Attributes:
        model_config: open_clip model-config JSON (relative paths: working dir, then repository).
        classes: ``"all"`` (the world CLIP) or ``"seen"`` (the control that never saw the unseen
            classes: neither their images nor their names).
        seed: Seed of the weights, the rendered images and the batches.
        steps: Optimiser steps.
        batch_size: Images (and captions) per step.
        lr: Peak AdamW learning rate (linear warm-up, cosine decay to 0).
        weight_decay: AdamW weight decay of matrices (biases, norms and scales have none).
        warmup_steps: Linear warm-up steps.
        pool_size: Rendered training images; batches are random crops of them.
        render_size: Side of the rendered images.
        min_crop: Smallest crop side (crops are resized to the model's input size).
        single_class_fraction: Share of pool images showing one class only.
        min_class_fraction: A class is named in a caption when it covers this share of the crop.
        templates: Caption templates (a set name of ``chimeraseg.clip.templates``).
        held_out_per_class: Held-out single-class images per class for the quality gate.
        min_mean_accuracy: Gate: mean held-out zero-shot accuracy over classes.
        min_class_accuracy: Gate: held-out zero-shot accuracy of every class.
    """

    model_config: str = WORLD_CLIP_MODEL_CONFIG
    classes: str = "all"
    seed: int = 0
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    pool_size: int = 3000
    render_size: int = 160
    min_crop: int = 96
    single_class_fraction: float = 0.25
    min_class_fraction: float = 0.03
    templates: str = "zegclip15"
    held_out_per_class: int = 50
    min_mean_accuracy: float = 0.99
    min_class_accuracy: float = 0.95

    def __post_init__(self) -> None:
        if self.classes not in ("all", "seen"):
            raise ValueError(f"WorldClipConfig.classes={self.classes!r} must be 'all' or 'seen'")
        if self.steps < 1 or self.batch_size < 2 or self.pool_size < self.batch_size:
            raise ValueError(
                f"WorldClipConfig: steps={self.steps} must be >= 1, batch_size="
                f"{self.batch_size} >= 2 and pool_size={self.pool_size} >= batch_size"
            )
        if not 0 < self.min_crop <= self.render_size:
            raise ValueError(
                f"WorldClipConfig.min_crop={self.min_crop} must be in (0, render_size="
                f"{self.render_size}]"
            )

    def as_dict(self) -> dict:
        """All fields, JSON-serialisable."""
        return asdict(self)


class WorldClipQualityError(RuntimeError):
    """A trained world CLIP missed the zero-shot quality gate (the message names the classes)."""


def world_class_names(classes: str) -> tuple[str, ...]:
    """The synthetic world's class names: all of them, or the seen ones only."""
    split = get_split("synthetic")
    if classes == "all":
        return tuple(split.class_names)
    return tuple(split.class_names[i] for i in split.seen)


def _input_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _sample_batch(
    pool: CaptionedPool,
    templates: list[str],
    config: WorldClipConfig,
    out_size: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, list[str]]:
    """Random crops (one side per batch), flips and their captions.

    Returns:
        ``(B, 3, out_size, out_size)`` float RGB in 0..1 and ``B`` captions.
    """
    num, size = pool.images.shape[0], pool.images.shape[1]
    side = int(rng.integers(config.min_crop, size + 1))
    index = rng.choice(num, config.batch_size, replace=False)
    offsets = rng.integers(0, size - side + 1, size=(config.batch_size, 2))
    flips = rng.random(config.batch_size) < 0.5
    crops, captions = [], []
    for i, (y, x), flip in zip(index, offsets, flips):
        image = pool.images[i, y : y + side, x : x + side]  # (side, side, 3)
        label = pool.labels[i, y : y + side, x : x + side]
        counts = np.bincount(label.ravel(), minlength=256)[: len(pool.names)]
        present = np.flatnonzero(counts >= config.min_class_fraction * side * side)
        if present.size == 0:
            present = np.asarray([int(counts.argmax())])
        template = templates[int(rng.integers(len(templates)))]
        captions.append(caption(pool.names, present.tolist(), template, rng))
        crops.append(image[:, ::-1] if flip else image)
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).permute(0, 3, 1, 2)
    batch = batch.float() / 255.0  # (B, 3, side, side)
    if side != out_size:
        batch = F.interpolate(batch, size=(out_size, out_size), mode="bilinear", antialias=True)
    return batch, captions


def _optimizer(model: nn.Module, config: WorldClipConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_at(step: int, config: WorldClipConfig) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows.

    Args:
        image: ``(B, D)`` unit image embeddings.
        text: ``(B, D)`` unit text embeddings; row ``i`` is the caption of image ``i``.
        logit_scale: log of the inverse temperature (scalar).
    """
    logits = logit_scale.exp() * image @ text.t()  # (B, B)
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def train_world_clip(
    config: WorldClipConfig, progress: bool = True
) -> tuple[nn.Module, dict[str, float]]:
    """Trains a world CLIP (the gate is checked separately, see :func:`zero_shot_report`).

    Args:
        config: What to train.
        progress: Show a progress bar with the running loss.

    Returns:
        The trained model (eval mode, frozen) and ``{"final_loss", "seconds", "threads"}``.
    """
    name = resolve_model_name(config.model_config)
    names = world_class_names(config.classes)
    start = time.perf_counter()
    model = build_untrained_clip(name, config.seed).train()
    model.requires_grad_(True)
    tokenizer = open_clip.get_tokenizer(name)
    templates = resolve_templates(config.templates)
    pool = render_pool(
        names, config.render_size, config.pool_size, config.seed, config.single_class_fraction
    )
    mean, std = clip_pixel_stats(model.visual)
    out_size = _input_size(model)
    optimizer = _optimizer(model, config)
    rng = np.random.default_rng([WORLD_NAMESPACE, _BATCH_STREAM, config.seed])
    bar = tqdm(range(config.steps), desc=f"world CLIP ({config.classes})", disable=not progress)
    loss_value = float("nan")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, config)
        images, captions = _sample_batch(pool, templates, config, out_size, rng)
        image = F.normalize(model.encode_image((images - mean) / std), dim=-1)  # (B, D)
        text = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)  # (B, D)
        loss = clip_loss(image, text, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = loss.item()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_value:.3f}")
    model.eval().requires_grad_(False)
    info = {
        "final_loss": loss_value,
        "seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
    }
    return model, info


@torch.no_grad()
def zero_shot_report(model: nn.Module, config: WorldClipConfig) -> dict:
    """Held-out single-class zero-shot accuracy and the gate's verdict.

    Classifies single-class images never used in training (random scales) against the text
    embeddings of every class the CLIP was trained on (prompt ensemble ``config.templates``).

    Returns:
        ``{"per_class": {name: accuracy}, "mean_accuracy", "passed", "failing": [names],
        "classes": [names]}``; accuracies in 0..1.
    """
    names = world_class_names(config.classes)
    images, targets = render_held_out_patches(
        names, config.held_out_per_class, _input_size(model), config.seed
    )
    text = encode_class_names(model, list(names), config.templates)  # (C, D)
    mean, std = clip_pixel_stats(model.visual)
    predictions = []
    for start in range(0, len(images), 256):
        x = torch.from_numpy(images[start : start + 256]).permute(0, 3, 1, 2).float() / 255.0
        feats = F.normalize(model.encode_image((x - mean) / std).float(), dim=-1)  # (b, D)
        predictions.append((feats @ text.t()).argmax(dim=1).numpy())
    correct = np.concatenate(predictions) == targets
    per_class = {n: float(correct[targets == c].mean()) for c, n in enumerate(names)}
    mean_accuracy = float(np.mean(list(per_class.values())))
    failing = [n for n, a in per_class.items() if a < config.min_class_accuracy]
    passed = mean_accuracy >= config.min_mean_accuracy and not failing
    return {
        "classes": list(names),
        "per_class": per_class,
        "mean_accuracy": mean_accuracy,
        "failing": failing,
        "passed": passed,
    }


def gate_message(report: dict, config: WorldClipConfig) -> str:
    """One line: the gate's numbers and, when it fails, the classes below the bar."""
    line = (
        f"held-out zero-shot accuracy {100 * report['mean_accuracy']:.1f}% on average "
        f"(gate >= {100 * config.min_mean_accuracy:.0f}%), lowest "
        + ", ".join(
            f"{n} {100 * a:.0f}%" for n, a in sorted(report["per_class"].items(), key=_by_value)[:3]
        )
        + f" (gate >= {100 * config.min_class_accuracy:.0f}% each)"
    )
    if report["failing"]:
        line += "; FAILING: " + ", ".join(report["failing"])
    return line


def _by_value(item: tuple[str, float]) -> float:
    return item[1]
