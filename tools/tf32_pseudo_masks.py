#!/usr/bin/env python
"""What TF32 does to the teacher's features and the pseudo masks, on the synthetic world.

``FLOAT32_PRECISION "high"`` lets CUDA matmuls and cuDNN convolutions read their float32 inputs
as TF32 (10 mantissa bits instead of 23; products and sums stay float32). This tool runs the
frozen CLIP teacher and the pseudo-mask generator on the synthetic world's training images twice,
in float32 and with TF32 inputs, and reports how far the teacher's dense features move and on how
many pixels the pseudo labels differ (docs/GPU.md, 'GPU switches'), for two cases:

- ``teacher``: TF32 in the teacher only, the pseudo masks from its features in float32;
- ``everywhere``: TF32 in the teacher and in the pseudo masks' own matmuls (what the global
  switch does on a GPU: float32 islands turn autocast off, not TF32).

On the CPU (``--device cpu``) TF32 is emulated: every input of a matmul or convolution is rounded
to TF32 (round to nearest even on the 13 dropped mantissa bits), attention included (math kernel).
On a GPU (``--device cuda``) the real TF32 kernels run; the emulation is reported beside them.

Examples::

    python tools/tf32_pseudo_masks.py                       # CPU emulation, the world CLIP
    python tools/tf32_pseudo_masks.py --device cuda --output-json tf32.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from chimeraseg.clip.cli import add_clip_arguments
from chimeraseg.clip.loading import load_clip
from chimeraseg.clip.teacher import CLIPTeacher
from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.splits import get_split
from chimeraseg.evaluation.pseudo_mask_quality import load_samples
from chimeraseg.evaluation.pseudo_mask_quality.data import hide_unseen
from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig, generate_pseudo_masks
from chimeraseg.utils.tool_parser import tool_parser

WORLD_CLIP = os.path.join("configs", "clip", "chimeraseg-world-vit.json")
aten = torch.ops.aten
# Matmul / convolution ops and the positions of their float32 operands read as TF32.
_TF32_OPERANDS = {
    aten.mm.default: (0, 1),
    aten.bmm.default: (0, 1),
    aten.addmm.default: (1, 2),
    aten.baddbmm.default: (1, 2),
    aten.convolution.default: (0, 1),
}


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest TF32 value (10 mantissa bits, ties to even), still float32."""
    bits = x.contiguous().view(torch.int32)
    even = (bits >> 13) & 1
    return ((bits + 0xFFF + even) & ~0x1FFF).view(torch.float32).view_as(x)


class TF32Emulation(TorchDispatchMode):
    """Rounds the float32 operands of every matmul and convolution to TF32 while active.

    Attributes:
        calls: how many matmuls and convolutions it rounded (class-wide, over every instance).
    """

    calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        positions = _TF32_OPERANDS.get(func)
        if positions:
            TF32Emulation.calls += 1
            args = list(args)
            for i in positions:
                if isinstance(args[i], torch.Tensor) and args[i].dtype == torch.float32:
                    args[i] = round_to_tf32(args[i])
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def tf32(kind: str) -> Iterator[None]:
    """``"off"``: float32; ``"emulated"``: :class:`TF32Emulation`; ``"cuda"``: the GPU's TF32."""
    if kind == "off":
        yield
    elif kind == "emulated":
        with sdpa_kernel(SDPBackend.MATH), TF32Emulation():
            yield
    else:
        saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved[0])
            torch.backends.cudnn.allow_tf32 = saved[1]


def use_float32() -> None:
    """Plain float32 matmuls and convolutions for this process: the reference (PyTorch's own
    default lets cuDNN convolutions use TF32)."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False


def _pseudo_labels(teacher, samples, split, text, mode, config, teacher_tf32, masks_tf32):
    """Per image ``(H, W)`` pseudo labels and ``(D, h, w)`` dense features, and the number of
    emulated TF32 calls in the pseudo masks."""
    labels, features, masks_calls = [], [], 0
    for s in samples:
        with torch.no_grad(), tf32(teacher_tf32):
            dense = teacher(s.image[None].to(text.device)).dense  # (1, D, h, w)
        hidden = hide_unseen(s.true, split.seen, split.unseen)[None].to(text.device)  # (1, H, W)
        start = TF32Emulation.calls
        with torch.no_grad(), tf32(masks_tf32):
            out = generate_pseudo_masks(
                hidden, dense, num_seen=len(split.seen), mode=mode, config=config,
                seen_text=text[list(split.seen)] if mode == "transductive" else None,
                unseen_text=text[list(split.unseen)] if mode == "transductive" else None,
            )  # fmt: skip
        masks_calls += TF32Emulation.calls - start
        labels.append(out.labels[0])
        features.append(dense[0])
    return labels, features, masks_calls


def compare(reference: tuple, other: tuple, num_seen: int) -> dict[str, float]:
    """Pixel agreement of the pseudo labels and the teacher features' relative error."""
    (ref_labels, ref_dense, _), (labels, dense, masks_calls) = reference, other
    pixels = same = decided = decided_same = 0
    for a, b in zip(ref_labels, labels):
        pixels += a.numel()
        same += int((a == b).sum())
        pseudo = (a >= num_seen) & (a != 255)  # pixels the pseudo masks labelled in float32
        decided += int(pseudo.sum())
        decided_same += int((a == b)[pseudo].sum())
    errors = [
        ((d - r).norm(dim=0) / r.norm(dim=0).clamp_min(1e-12)).flatten()
        for r, d in zip(ref_dense, dense)
    ]  # per cell ||f' - f|| / ||f||
    err = torch.cat(errors)
    cos = torch.cat([F.cosine_similarity(r, d, dim=0).flatten() for r, d in zip(ref_dense, dense)])
    return {
        "pixel_agreement": same / pixels,
        "pseudo_pixel_agreement": decided_same / decided if decided else 1.0,
        "differing_pixels": pixels - same,
        "pixels": pixels,
        "pseudo_pixels": decided,
        "feature_rel_error_mean": float(err.mean()),
        "feature_rel_error_max": float(err.max()),
        "feature_cosine_min": float(cos.min()),
        "tf32_matmuls_in_pseudo_masks": masks_calls,  # emulated calls (0 for "teacher")
    }


def measure(args: argparse.Namespace, clip_model: torch.nn.Module) -> dict[str, Any]:
    """The comparison of the module docstring for every mode and TF32 kind."""
    device = torch.device(args.device)
    split = get_split("synthetic")
    root = args.datasets_root or tempfile.mkdtemp(prefix="chimeraseg_tf32_")
    from chimeraseg.data.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(root, num_train=args.images, num_val=1)
    samples = load_samples(
        os.path.join(dataset, "train2017"),
        os.path.join(dataset, "stuffthingmaps_detectron2", "train2017"),
        split.num_classes, crop=(160, 192), max_images=args.images,
    )  # fmt: skip
    clip_model = clip_model.to(device)
    teacher = CLIPTeacher(clip_model)
    use_float32()
    with torch.no_grad():
        text = encode_class_names(clip_model, list(split.class_names), "zegclip15").to(device)
    config = PseudoMaskConfig()
    kinds = ["emulated", "cuda"] if device.type == "cuda" else ["emulated"]
    results: dict[str, Any] = {}
    for mode in ("inductive", "transductive"):
        ref = _pseudo_labels(teacher, samples, split, text, mode, config, "off", "off")
        for kind in kinds:
            cases = {"teacher": (kind, "off"), "everywhere": (kind, kind)}
            for case, (in_teacher, in_masks) in cases.items():
                run = _pseudo_labels(
                    teacher, samples, split, text, mode, config, in_teacher, in_masks
                )
                results[f"{mode}/{kind}/{case}"] = compare(ref, run, len(split.seen))
    return {"device": str(device), "images": len(samples), "results": results}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = tool_parser(
        __doc__.splitlines()[0],
        (
            "python tools/tf32_pseudo_masks.py",
            "python tools/tf32_pseudo_masks.py --device cuda --output-json tf32.json",
        ),
    )
    p.add_argument("--device", default="cpu", help="cpu (TF32 emulated) or cuda (real TF32 too)")
    p.add_argument("--images", type=int, default=16, help="synthetic-world training images")
    p.add_argument("--datasets-root", help="where the synthetic dataset is written (default tmp)")
    add_clip_arguments(
        p, name=False, default_weights=None,
        random_help="a random CLIP of the world CLIP's shape (when the world CLIP is unavailable)",
    )  # fmt: skip
    p.add_argument("--output-json", metavar="FILE", help="write the results to this JSON file")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    return p.parse_args(argv)


def _clip(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    """The world CLIP (trained and cached on first use), given weights, or a random one."""
    if args.allow_random_clip:
        return load_clip(WORLD_CLIP, pretrained=None, allow_random_init=True), "random"
    weights = args.clip_weights
    if weights is None:
        from chimeraseg.world.cache import ensure_world_clip

        weights = str(ensure_world_clip(progress=False).checkpoint)
    return load_clip(WORLD_CLIP, pretrained=weights), weights


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    clip_model, weights = _clip(args)
    report = {"clip": weights, **measure(args, clip_model)}
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(report, f, indent=1)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['images']} images, device {report['device']}, CLIP {weights}")
        for key, r in report["results"].items():
            print(
                f"{key:<36} pixels equal {r['pixel_agreement']:.4%} (pseudo-labelled "
                f"{r['pseudo_pixel_agreement']:.4%}), features rel. error mean "
                f"{r['feature_rel_error_mean']:.2e} max {r['feature_rel_error_max']:.2e}"
            )
    return report


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/tf32_pseudo_masks.py")
