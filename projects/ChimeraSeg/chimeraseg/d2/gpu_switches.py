"""The GPU switches of the config (docs/GPU.md, 'GPU switches'): applied here, nowhere else.

- ``FLOAT32_PRECISION`` / ``CUDNN_BENCHMARK`` (detectron2's keys): process-wide flags of CUDA
  matmuls and cuDNN, set by :func:`apply_gpu_switches` (``default_setup`` sets them too for
  ``tools/train_net.py``; the trainer calls this for every other entry point).
- ``SOLVER.FUSED``: the fused AdamW / SGD kernel on CUDA (:func:`fused_optimizer_kwargs`).
- ``DATALOADER.PIN_MEMORY``: page-locked training batches on CUDA (:func:`pin_memory`).
- ``MODEL.CHANNELS_LAST``: the student's convolutions in channels-last memory format
  (:func:`to_channels_last`).
- ``SOLVER.COMPILE``: ``torch.compile`` of the training step's fixed-shape modules, in place, so
  the state-dict keys stay those of an eager model (:func:`compile_training_modules`).

None of them changes a CPU run: the CUDA-only ones are skipped, with a log line, on other devices.
"""

from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode
from torch import nn

__all__ = [
    "COMPILED_MODULES",
    "FLOAT32_PRECISIONS",
    "apply_gpu_switches",
    "compile_training_modules",
    "fused_optimizer_kwargs",
    "pin_memory",
    "to_channels_last",
]

logger = logging.getLogger(__name__)

# FLOAT32_PRECISION values: "" leaves PyTorch's defaults; the others are
# torch.set_float32_matmul_precision's ("highest" also turns off cuDNN's TF32 convolutions).
FLOAT32_PRECISIONS = ("", "highest", "high", "medium")
# Children of ChimeraSegModel that SOLVER.COMPILE compiles: fixed shapes at a fixed crop size.
# The pseudo masks, prototypes and losses stay eager (data-dependent region counts).
COMPILED_MODULES = ("backbone", "decoder", "head", "teacher")


def _on_cuda(cfg: CfgNode) -> bool:
    """Whether ``MODEL.DEVICE`` is a CUDA device and CUDA is available in this process."""
    return torch.device(cfg.MODEL.DEVICE).type == "cuda" and torch.cuda.is_available()


def apply_gpu_switches(cfg: CfgNode) -> None:
    """Sets cuDNN benchmarking and the float32 precision of CUDA matmuls / convolutions.

    Nothing changes unless ``MODEL.DEVICE`` is CUDA (PyTorch's float32 precision also selects
    CPU kernels, which CPU runs and the tests keep at full float32). ``DETERMINISTIC True`` keeps
    benchmarking off (:func:`chimeraseg.d2.determinism.apply_determinism`).
    """
    if not _on_cuda(cfg):
        return
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK) and not cfg.DETERMINISTIC
    precision = cfg.FLOAT32_PRECISION
    if precision:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = precision != "highest"
    logger.info(
        "GPU switches: cudnn.benchmark=%s, float32 matmul precision=%s, cudnn.allow_tf32=%s",
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
    )


def fused_optimizer_kwargs(cfg: CfgNode) -> dict[str, bool]:
    """``{"fused": True}`` for the optimizer when ``SOLVER.FUSED`` can apply, else ``{}``.

    The fused kernel is used on CUDA only. It is also left out under float16 AMP with gradient
    clipping: the gradient scaler then leaves unscaling to the fused kernel, inside the step,
    after detectron2's clipping wrapper has clipped the still-scaled gradients.
    """
    if not cfg.SOLVER.FUSED:
        return {}
    if not _on_cuda(cfg):
        logger.info("SOLVER.FUSED: not on CUDA (MODEL.DEVICE %s), plain kernel", cfg.MODEL.DEVICE)
        return {}
    fp16 = cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.PRECISION == "float16"
    if fp16 and cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        logger.info("SOLVER.FUSED: float16 AMP with SOLVER.CLIP_GRADIENTS, plain kernel")
        return {}
    return {"fused": True}


def pin_memory(cfg: CfgNode) -> bool:
    """Whether the training loader pins its batches (``DATALOADER.PIN_MEMORY`` on CUDA)."""
    return bool(cfg.DATALOADER.PIN_MEMORY) and _on_cuda(cfg)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Stores the 4-D weights of ``module`` in channels-last format (in place; values equal).

    Returns:
        ``module``.
    """
    return module.to(memory_format=torch.channels_last)


def compile_training_modules(model: nn.Module) -> list[str]:
    """Compiles the fixed-shape children of a ChimeraSeg model in place (``nn.Module.compile``).

    In-place compilation keeps the module tree, so ``state_dict`` keys, checkpoints and the
    optimizer's parameters are those of the eager model (no ``_orig_mod.`` prefix).

    Args:
        model: the ``ChimeraSeg`` meta-architecture (its ``.model``) or a ``ChimeraSegModel``.

    Returns:
        The names of the compiled children.
    """
    inner = getattr(model, "model", model)
    compiled = []
    for name in COMPILED_MODULES:
        child = getattr(inner, name, None)
        if isinstance(child, nn.Module):
            child.compile()
            compiled.append(name)
    logger.info("SOLVER.COMPILE: compiled %s", ", ".join(compiled) or "nothing")
    return compiled
