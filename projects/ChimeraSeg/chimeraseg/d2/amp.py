"""Mixed-precision training loop (``SOLVER.AMP.ENABLED``) that also runs on the CPU.

detectron2's ``AMPTrainer`` autocasts through ``torch.cuda.amp`` and refuses to run without CUDA.
:class:`DeviceAMPTrainer` keeps its checkpointed state (the gradient scaler) and its metrics, and
autocasts on the model's own device type with the dtype of ``SOLVER.AMP.PRECISION``: float16
(CUDA only, with loss scaling) or bfloat16 (CUDA or CPU; bfloat16 has float32's exponent range,
so no loss scaling is needed and the scaler is disabled).
"""

from __future__ import annotations

import time

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer
from torch import nn

__all__ = ["AMP_PRECISIONS", "DeviceAMPTrainer", "amp_precision"]

# ``SOLVER.AMP.PRECISION`` / ``TEST.AMP.PRECISION`` value -> autocast dtype.
AMP_PRECISIONS: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_precision(cfg: CfgNode, node: str = "SOLVER") -> torch.dtype:
    """The autocast dtype of ``<node>.AMP.PRECISION`` (``SOLVER``: training, ``TEST``: inference).

    Raises:
        ValueError: naming the key and value, for an unknown precision or float16 on the CPU
            (CPU autocast supports bfloat16 only).
    """
    key, name = f"{node}.AMP.PRECISION", getattr(cfg, node).AMP.PRECISION
    if name not in AMP_PRECISIONS:
        raise ValueError(f"config key {key} = {name!r} is not one of {list(AMP_PRECISIONS)}")
    if name == "float16" and not str(cfg.MODEL.DEVICE).startswith("cuda"):
        raise ValueError(
            f"config key {key} = 'float16' needs a CUDA MODEL.DEVICE (got {cfg.MODEL.DEVICE!r}); "
            "use 'bfloat16' for mixed precision on the CPU"
        )
    return AMP_PRECISIONS[name]


class DeviceAMPTrainer(AMPTrainer):
    """``AMPTrainer`` whose step autocasts on ``device_type`` (``"cuda"`` or ``"cpu"``).

    Args:
        model: the (possibly DDP-wrapped) model in training mode.
        data_loader: the training loader.
        optimizer: the optimizer.
        device_type: ``torch.device(...).type`` of the model.
        precision: autocast dtype (``torch.float16`` or ``torch.bfloat16``).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: object,
        optimizer: torch.optim.Optimizer,
        *,
        device_type: str,
        precision: torch.dtype,
    ) -> None:
        # Loss scaling guards float16's narrow exponent range; bfloat16 does not need it.
        scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, grad_scaler=scaler, precision=precision)
        self.device_type = device_type

    def run_step(self) -> None:
        """One iteration: forward and losses under autocast, scaled backward, optimizer step."""
        if not self.model.training:
            raise RuntimeError("DeviceAMPTrainer: the model was switched to eval mode")
        started = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - started
        with torch.autocast(device_type=self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            total = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(total).backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
