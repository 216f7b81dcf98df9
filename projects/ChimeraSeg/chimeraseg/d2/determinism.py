"""``DETERMINISTIC``: ask PyTorch for deterministic kernels (GETTING_STARTED.md, 'Reproducibility').

``SEED`` fixes every random draw (weights, data order, augmentations, Gumbel noise), but some CUDA
kernels still sum in a run-dependent order (atomic adds in, e.g., the backward of bilinear
upsampling, ``index_add`` / ``scatter_add``, and cuBLAS split-K reductions). With
``DETERMINISTIC True`` PyTorch uses deterministic variants where they exist and warns once, naming
the operation, where none exists (``warn_only``: training continues).
"""

from __future__ import annotations

import logging
import os

import torch
from detectron2.config import CfgNode

__all__ = ["apply_determinism"]

logger = logging.getLogger(__name__)

# cuBLAS needs a fixed workspace for reproducible GEMMs (CUDA >= 10.2); see PyTorch's notes on
# reproducibility.
_CUBLAS_WORKSPACE = ":4096:8"


def apply_determinism(cfg: CfgNode) -> bool:
    """Switches this process to deterministic kernels when ``cfg.DETERMINISTIC``.

    Call once per process, before the model is built (``tools/train_net.py`` does).

    Returns:
        Whether deterministic mode was switched on.
    """
    if not cfg.DETERMINISTIC:
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if cfg.CUDNN_BENCHMARK:
        logger.info("DETERMINISTIC True overrides CUDNN_BENCHMARK True (benchmarking is off)")
    return True
