"""CLIP and vocabulary for the benchmark: real weights, or random weights behind an explicit flag.

Speed does not depend on weight values, so a random CLIP with the full ViT-B/16 shapes gives the
same timings as the OpenAI weights; it is only ever built when ``--allow-random-clip`` (or
``--tiny``, which also implies random weights) is given.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chimeraseg.clip.cli import DEFAULT_CLIP_NAME as CLIP_NAME
from chimeraseg.clip.cli import clip_weights

NUM_COCO_STUFF_CLASSES = 171

# Same structure as ViT-B/16 (patch 16, QuickGELU, class token, ln_post, proj) but tiny widths,
# for the smoke test and for quick runs while developing (identical to tests/conftest.py's).
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    "quick_gelu": True,
}


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_clip(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """Builds the CLIP model the run uses.

    Args:
        args: Parsed CLI (``tiny`` and the options of
            :func:`chimeraseg.clip.cli.add_clip_arguments`).

    Returns:
        ``(clip_model, description)``; the model is frozen and in eval mode.

    Raises:
        SystemExit: If no weights are given and random weights are not explicitly allowed.
    """
    torch.manual_seed(args.seed)
    if args.tiny:
        from open_clip.model import CLIP

        return _freeze(CLIP(**TINY_CLIP_CONFIG)), "tiny random CLIP (TINY_CLIP_CONFIG)"
    pretrained = clip_weights(args)
    if pretrained is None and not args.allow_random_clip:
        raise SystemExit(
            "benchmark: no CLIP weights given; pass --clip-weights TAG_OR_FILE, "
            "or --allow-random-clip to time a randomly initialised ViT-B/16 (same speed)"
        )
    try:
        from chimeraseg.clip.loading import load_clip
    except ImportError:  # the loader is not there yet: plain open_clip, same semantics
        import open_clip

        model = open_clip.create_model(CLIP_NAME, pretrained=pretrained)
    else:
        model = load_clip(CLIP_NAME, pretrained=pretrained, allow_random_init=pretrained is None)
    desc = f"{CLIP_NAME} ({pretrained})" if pretrained else f"{CLIP_NAME} (random weights)"
    return _freeze(model), desc


@dataclass(frozen=True)
class Vocabulary:
    """The evaluation vocabulary.

    Attributes:
        names: ``N`` class names.
        seen: Seen class indices (training split).
        unseen: Unseen class indices.
        text: ``(N, D)`` unit-norm text embeddings.
    """

    names: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    text: torch.Tensor


def build_vocabulary(clip_model: nn.Module, random_weights: bool) -> Vocabulary:
    """COCO-Stuff-171 names and split with their text embeddings.

    With random CLIP weights the text tower's output is meaningless, so random unit rows of the
    same shape are used (inference cost depends only on the shape); otherwise the single-template
    prompt is encoded with :func:`chimeraseg.clip.text.encode_class_names`.
    """
    from chimeraseg.data.splits import get_split

    split = get_split("coco_stuff_171")
    names = tuple(split.class_names)
    dim = int(clip_model.visual.proj.shape[1])
    if random_weights:
        text = F.normalize(torch.randn(len(names), dim), dim=-1)
    else:
        from chimeraseg.clip.text import encode_class_names

        text = encode_class_names(clip_model, list(names), templates="single").float()
    return Vocabulary(names, tuple(split.seen), tuple(split.unseen), text)
