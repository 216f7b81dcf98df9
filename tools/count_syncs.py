#!/usr/bin/env python
"""Host-device synchronisations of a training step, counted two ways (docs/GPU.md).

- ``dispatch``: the aten calls that force a synchronisation, counted by
  ``chimeraseg.utils.host_syncs.SyncCounter`` (any device, the CPU included);
- ``cuda_warnings``: what CUDA itself reports, ``torch.cuda.set_sync_debug_mode("warn")`` over the
  step, one warning per synchronising call (GPU only; ``null`` on the CPU).

The step is the detectron2 one: the ``ChimeraSeg`` meta-architecture's forward of a batch of uint8
images and labels (in pinned memory on a GPU, as the training loader hands them over), backward
(``forward_backward``), the optimizer step (``optimizer``), and detectron2's
``SimpleTrainer.run_step`` around the same with its metric logging (``trainer``). The first step
is a warm-up and not counted. Off the GPU, ``dispatch`` also counts the optimizer's reads of its
step counters, which live on the CPU and are no synchronisation on a GPU either.

Examples::

    python tools/count_syncs.py --device cuda --allow-random-clip      # MiT-B0 COCO-Stuff, 2 x 512
    python tools/count_syncs.py --device cpu --allow-random-clip --size 64 \\
        --config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from chimeraseg.clip.cli import add_clip_arguments
from chimeraseg.utils.host_syncs import SyncCounter
from chimeraseg.utils.tool_parser import tool_parser  # noqa: E402

DEFAULT_CONFIG = "configs/coco-stuff-164k-156/chimeraseg_mitb0_80k.yaml"
# The text of the warning torch.cuda.set_sync_debug_mode("warn") raises per synchronising call.
SYNC_WARNING = "called a synchronizing CUDA operation"


@contextlib.contextmanager
def cuda_sync_warnings(device: torch.device, found: list[str]) -> Iterator[None]:
    """Collects CUDA's synchronisation warnings into ``found`` (nothing off the GPU)."""
    if device.type != "cuda":
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found += [str(w.message) for w in caught if SYNC_WARNING in str(w.message)]


def synthetic_batch(model: Any, batch: int, size: int, pin: bool) -> list[dict[str, Any]]:
    """``batch`` dicts as the training loader gives them: uint8 images, uint8 labels of the
    model's seen dataset ids in 4x4 blocks with the right third ignore (255)."""
    gen = torch.Generator().manual_seed(0)
    seen = torch.tensor(model.model.seen_ids)
    out = []
    for _ in range(batch):
        blocks = seen[torch.randint(0, len(seen), (4, 4), generator=gen)]
        label = blocks.repeat_interleave(-(-size // 4), 0).repeat_interleave(-(-size // 4), 1)
        label = label[:size, :size].to(torch.uint8)
        label[:, 2 * size // 3 :] = 255
        image = torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        if pin:
            image, label = image.pin_memory(), label.pin_memory()
        out.append({"image": image, "sem_seg": label, "height": size, "width": size})
    return out


def _counted(device: torch.device, step: Any) -> dict[str, Any]:
    """Runs ``step`` once under both counters."""
    found: list[str] = []
    counter = SyncCounter()
    with cuda_sync_warnings(device, found), counter:
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {
        "dispatch": counter.syncs,
        "dispatch_by_op": dict(counter.counts),
        "cuda_warnings": len(found) if device.type == "cuda" else None,
        "cuda_warning_sites": sorted(set(found))[:20],
    }


def count(args: argparse.Namespace) -> dict[str, Any]:
    """The two counts of the module docstring for each kind of step."""
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import chimeraseg.d2  # noqa: F401 -- registers the meta-architecture and the datasets
    from chimeraseg.d2.config import get_chimeraseg_cfg
    from chimeraseg.d2.trainer import build_optimizer

    cfg = get_chimeraseg_cfg(args.config_file, _opts(args))
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    batch = synthetic_batch(model, args.batch, args.size, pin=device.type == "cuda")

    def forward_backward() -> None:
        losses = model(batch)
        sum(losses.values()).backward()

    def optimizer_step() -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    trainer = SimpleTrainer(model, iter(lambda: batch, None), optimizer)
    result: dict[str, Any] = {"config": args.config_file, "device": str(device)}
    result.update({"batch": args.batch, "size": args.size})
    with EventStorage(0) as storage:
        trainer.storage = storage
        forward_backward()  # warm-up: lazy initialisation, cuDNN algorithm search
        optimizer_step()
        steps = {"forward_backward": forward_backward, "optimizer": optimizer_step}
        steps["trainer"] = trainer.run_step
        for name, step in steps.items():
            result[name] = [_counted(device, step) for _ in range(args.steps)]
    return result


def _opts(args: argparse.Namespace) -> list[str]:
    clip = ["MODEL.CLIP.PRETRAINED", args.clip_weights or ""]
    if args.allow_random_clip:
        clip += ["MODEL.CLIP.ALLOW_RANDOM_INIT", "True"]
    return [
        *clip, "MODEL.CHIMERASEG.BACKBONE.PRETRAINED", "", "MODEL.DEVICE", args.device,
        "INPUT.CROP.SIZE", f"({args.size}, {args.size})", *args.opts,
    ]  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = tool_parser(
        __doc__.splitlines()[0],
        (
            "python tools/count_syncs.py --device cuda --allow-random-clip",
            "python tools/count_syncs.py --device cpu --allow-random-clip --size 64 "
            "--config-file configs/synthetic/chimeraseg_mitb0_synthetic.yaml",
        ),
    )
    p.add_argument("--config-file", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda when available)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    p.add_argument("--size", type=int, default=512, help="square crop side (default 512)")
    p.add_argument("--steps", type=int, default=2, help="counted steps of each kind (default 2)")
    add_clip_arguments(p, name=False, default_weights=None, random_help="random CLIP weights")
    p.add_argument("--output-json", metavar="FILE", help="write the counts to this JSON file")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = count(args)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=1)
    for name in ("forward_backward", "optimizer", "trainer"):
        steps = result[name]
        print(
            f"{name:<16} dispatch-counted syncs per step {[s['dispatch'] for s in steps]}, "
            f"CUDA sync warnings {[s['cuda_warnings'] for s in steps]}"
        )
    return result


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/count_syncs.py")
