"""Section 5: pseudo-mask generation, ms per image at the benchmark size, aten calls per batch.

The generator is described in docs/METHOD.md, 'Pseudo masks'. Besides the time, one untimed call
per mode is counted by :class:`~benchmarks.syncs.SyncCounter`: its aten calls (each a kernel
launch on a GPU) and its host-device synchronisations, next to those of the sequential
implementation this one replaced (:data:`BEFORE`; docs/GPU.md, 'Host synchronisations per
training step').

Input: teacher dense features of random images from the run's CLIP (computed once, not timed) and
labels with seen classes in rectangles and an ignore region (a third of the image, as unseen
classes are ignore in training), with the COCO-Stuff-171 split (156 seen, 15 unseen). Labels are in
the training id space (seen classes ``0..Ns-1``), as ``generate_pseudo_masks`` takes them.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from benchmarks.clip_setup import Vocabulary
from benchmarks.measure import measure
from benchmarks.syncs import SyncCounter

# The sequential grouping loops (commit 54edb5a) on this section's default inputs (batch 2, 512,
# random ViT-B/16 CLIP, seed 0); their counts depended on the features. The audit that replaced
# them counted 3,436 aten calls for the pseudo masks of its own training step.
BEFORE = {
    "inductive": {"aten_calls": 2511, "syncs": 220},
    "transductive": {"aten_calls": 2713, "syncs": 234},
}
AUDIT_ATEN_CALLS = 3436


def synthetic_labels(batch: int, size: int, num_seen: int, seed: int) -> torch.Tensor:
    """``(B, S, S)`` long training ids: 4x4 blocks of seen ids, the right third ignore (255)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, num_seen, (batch, 4, 4), generator=gen)
    labels = blocks.repeat_interleave(size // 4, 1).repeat_interleave(size // 4, 2)
    labels = torch.nn.functional.pad(labels, (0, size - labels.shape[2], 0, size - labels.shape[1]))
    labels[:, :, 2 * size // 3 :] = 255
    return labels


def run_pseudo_masks(
    args: argparse.Namespace, clip_model: nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, Any]:
    """Median ms per image of ``generate_pseudo_masks`` (inductive and transductive)."""
    from chimeraseg.clip.teacher import CLIPTeacher
    from chimeraseg.modeling.pseudo_masks import generate_pseudo_masks

    batch = args.train_batch
    gen = torch.Generator().manual_seed(args.seed)
    images = (torch.rand(batch, 3, args.size, args.size, generator=gen) * 255).to(device)
    num_seen = len(vocab.seen)
    labels = synthetic_labels(batch, args.size, num_seen, args.seed).to(device)
    with torch.inference_mode():
        dense = CLIPTeacher(clip_model).to(device)(images).dense  # (B, D, S/16, S/16)
    seen_text = vocab.text[list(vocab.seen)].to(device)
    unseen_text = vocab.text[list(vocab.unseen)].to(device)
    out: dict[str, Any] = {"batch": batch, "size": args.size}
    with torch.inference_mode():
        for mode in ("inductive", "transductive"):
            kwargs = {"seen_text": seen_text, "unseen_text": unseen_text}
            kwargs = kwargs if mode == "transductive" else {}

            def run(mode=mode, kwargs=kwargs) -> object:
                return generate_pseudo_masks(labels, dense, num_seen=num_seen, mode=mode, **kwargs)

            m = measure(run, device, args.warmup, args.repeats)
            with SyncCounter() as counter:
                run()
            out[mode] = {
                "ms_per_image": 1000 * m.median_s / batch,
                "peak_mem_mb": m.peak_mem_mb,
                "aten_calls": counter.total_ops,
                "syncs": counter.syncs,
            }
    out["before"] = BEFORE
    out["audit_aten_calls"] = AUDIT_ATEN_CALLS
    return out
