"""Helpers shared by the tests (importable as ``chimeraseg_test_utils`` from any test directory).

Kept out of ``conftest.py`` because ``tests/d2/conftest.py`` shadows the module name ``conftest``.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_CONFIG = str(REPO / "configs" / "synthetic" / "chimeraseg_mitb0_synthetic.yaml")

HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None
DETECTRON2_SKIP_REASON = (
    "detectron2 is not installed (it is not on package registries; see README.md, 'Install')"
)
# Set by .ci/run for its pass with detectron2: then its absence fails the run instead of skipping.
REQUIRE_DETECTRON2_ENV = "CHIMERASEG_REQUIRE_DETECTRON2"

# A CLIP with ViT-B/16's structure (patch 16, QuickGELU, ln_pre/ln_post, class token, proj) but
# tiny widths, so that building it and running it take milliseconds. The text tower keeps the real
# tokenizer's vocabulary and context length so open_clip's tokenizer works unchanged.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    "quick_gelu": True,
}


def seed_everything(seed: int = 0) -> None:
    """Seeds Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- seeds code that still uses the global RNG
    torch.manual_seed(seed)


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """Builds the tiny random CLIP of ``TINY_CLIP_CONFIG``, frozen and in eval mode."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**TINY_CLIP_CONFIG).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_script(relative_path: str, module_name: str | None = None) -> ModuleType:
    """Imports a repository script (``tools/*.py``, ``datasets/*.py``) as a module.

    Args:
        relative_path: path from the repository root, e.g. ``"tools/train_net.py"``.
        module_name: name to give the module (default: the file's stem).
    """
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(module_name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TinyBackbone(torch.nn.Module):
    """Stand-in student: one stride-4 conv, ``(B, 3, H, W) -> {"res2": (B, 8, H/4, W/4)}``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"res2": self.conv(x)}


class TinyDecoder(torch.nn.Module):
    """A stand-in decoder: ``{"res2": (B, 8, h, w)} -> (B, 16, h, w)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 1)
        self.embed_dim = 16

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.conv(feats["res2"])


TINY_SEEN, TINY_UNSEEN = [0, 1, 2, 4], [3, 5]  # the 6-class split of build_tiny_model


def build_tiny_model(
    clip: torch.nn.Module,
    *,
    text: torch.Tensor | None = None,
    head_options: dict | None = None,
    with_teacher: bool = True,
    losses: object | None = None,
    **settings_options,
) -> torch.nn.Module:
    """A ``ChimeraSegModel`` (6 classes, ``TINY_UNSEEN`` unseen) with the stand-in student.

    Args:
        clip: the tiny CLIP (CSH copies, teacher).
        text: ``(6, 32)`` class text embeddings (random when None).
        head_options: ``HeadSettings`` fields.
        with_teacher: build the CLIP teacher (and the criterion).
        losses: the ``LossSettings`` (defaults when None).
        **settings_options: further ``ChimeraSegSettings`` fields.
    """
    from chimeraseg.modeling import (
        ChimeraSegSettings,
        HeadSettings,
        LossSettings,
        build_chimeraseg_model,
    )

    settings = ChimeraSegSettings(
        head=HeadSettings(**(head_options or {})),
        losses=losses or LossSettings(),
        teacher=with_teacher,
        **settings_options,
    )
    return build_chimeraseg_model(
        settings,
        clip_model=clip,
        backbone=TinyBackbone(),
        decoder=TinyDecoder(),
        class_text=torch.randn(6, 32) if text is None else text,
        seen_ids=TINY_SEEN,
        unseen_ids=TINY_UNSEEN,
    )


def reference_lseg(
    outputs: Any,
    latent: list[torch.Tensor],
    columns: list[dict[int, int]],
    weights: tuple[float, float, float],
    normalise: bool = True,
    pad_to: int = 0,
) -> torch.Tensor:
    """``Lseg`` written from the method's definition, in float64: CE + focal over every valid
    pixel of the batch, each image with its own classifier ``cat(text, unit latent rows)`` and
    cosine logits / ``tau``.

    Args:
        outputs: ``TrainingOutputs`` (features ``(B, D, h, w)``, pseudo labels ``(B, h, w)``,
            classifier text ``(C0, D)``, ``logit_tau``).
        latent: per image, its latent prototypes ``(n_i, D)``.
        columns: per image, latent label -> classifier column; a latent label without one is
            ignored.
        weights: ``(ce_weight, focal_weight, focal_gamma)``.
        normalise: False = raw latent rows, a mistake the implementation must not make.
        pad_to: zero classifier rows up to this width, the other such mistake.

    Returns:
        ``()`` float64.
    """
    ce_weight, focal_weight, focal_gamma = weights
    text = outputs.classifier_text.double()
    per_pixel = []
    for i, lat in enumerate(latent):
        lat = F.normalize(lat.double(), dim=-1) if normalise else lat.double()
        classifier = torch.cat([text, lat])  # (C_i, D)
        pad = max(pad_to - classifier.shape[0], 0)
        classifier = torch.cat([classifier, classifier.new_zeros(pad, classifier.shape[1])])
        tokens = F.normalize(outputs.features[i].double().flatten(1).t(), dim=-1)  # (h·w, D)
        logits = tokens @ classifier.t() / outputs.logit_tau  # (h·w, C_i), no padding columns
        target = outputs.pseudo_labels[i].flatten().clone()
        for label in target.unique().tolist():
            if text.shape[0] <= label < 255:
                target[target == label] = columns[i].get(label, 255)
        ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
        per_pixel.append(ce[target != 255])
    ce = torch.cat(per_pixel)  # (V,) -log p_t of the valid pixels of the batch
    focal = (1.0 - torch.exp(-ce)) ** focal_gamma * ce
    return ce_weight * ce.mean() + focal_weight * focal.mean()
