"""Where the time of a real forward pass goes: wall time per module, collected by forward hooks.

The hooks time the modules inside the very calls the throughput table measures (no separate
stage runs, no patched methods), so the stage shares of batch 1 and batch 8 come from the same
calls as their images/s. Chunked modules (the CSH runs over chunks of positions) are summed over
their calls. What no hooked module covers (classification, upsampling, copies) is reported as
``rest`` (:func:`per_image_ms`); :func:`time_upsampling` times the shared upsampling on its own
to split that further.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from benchmarks.measure import measure
from chimeraseg.modeling.inference import upsample_logits


class StageTimer:
    """Accumulates the wall time of named modules' forward calls.

    Args:
        modules: ``{stage name: module}``; several modules may share a stage name.
    """

    def __init__(self, modules: dict[str, nn.Module | list[nn.Module]]) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._handles = []
        self._start: dict[int, float] = {}
        for name, mods in modules.items():
            for module in mods if isinstance(mods, list) else [mods]:
                self._handles.append(module.register_forward_pre_hook(self._enter))
                self._handles.append(module.register_forward_hook(self._exit(name)))

    def _enter(self, module: nn.Module, args: object) -> None:
        self._start[id(module)] = time.perf_counter()

    def _exit(self, name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            self.seconds[name] += time.perf_counter() - self._start.pop(id(module))

        return hook

    def reset(self) -> None:
        """Forgets the times collected so far (e.g. of warm-up calls)."""
        self.seconds.clear()

    def remove(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()


def per_image_ms(
    seconds: dict[str, float], calls: int, images: int, total_s: float
) -> dict[str, float]:
    """``{stage: ms per image}`` plus ``rest`` (total minus the stages), averaged over calls.

    Args:
        seconds: wall time per stage, summed over the calls.
        calls: timed calls the stages were collected over.
        images: images per call.
        total_s: wall time of all ``calls`` together.
    """
    out = {name: 1000 * s / calls / images for name, s in seconds.items()}
    out["rest"] = max(1000 * total_s / calls / images - sum(out.values()), 0.0)
    return out


def student_stages(model: nn.Module) -> dict[str, nn.Module]:
    """The hooked stages of a ``ChimeraSegModel``: backbone, decoder and the CSH's parts."""
    head = model.head
    return {
        "backbone": model.backbone,
        "decoder": model.decoder,
        "csh_mlp": head.mlp,
        "csh_vencoder": head.vencoder,
        "csh_norm": head.norm,
        "csh_projection": head.proj,
    }


def baseline_stages(baseline: nn.Module) -> dict[str, nn.Module | list[nn.Module]]:
    """The hooked stages of the MaskCLIP-style baseline: patch embedding and CLIP blocks."""
    visual = baseline.visual
    return {
        "patch_embedding": visual.conv1,
        "clip_blocks": list(visual.transformer.resblocks[:-1]),
    }


def time_upsampling(
    batch: int, num_classes: int, grid: int, size: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    """ms per image of the shared upsampling of ``(B, N, grid, grid)`` logits to ``size``."""
    logits = torch.randn(batch, num_classes, grid, grid, device=device)
    m = measure(lambda: upsample_logits(logits, (size, size)), device, 1, repeats)
    return {"grid": grid, "ms_per_image": 1000 * m.median_s / batch}
