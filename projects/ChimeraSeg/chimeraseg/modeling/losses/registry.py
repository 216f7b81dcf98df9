"""The loss registry: every training loss under its log name, built from the loss settings.

A loss is an ``nn.Module`` whose ``forward(outputs, iteration)`` takes the model's
:class:`~chimeraseg.modeling.losses.outputs.TrainingOutputs` and the training iteration and
returns the unweighted scalar loss. Registering it makes it a key of
:attr:`~chimeraseg.modeling.settings.LossSettings.weights`; the criterion builds every loss with a
non-zero weight and multiplies it by that weight (docs/EXTENDING.md, 'Add a loss')::

    @register_loss("loss_toy")
    class ToyLoss(nn.Module):
        def __init__(self, settings: LossSettings) -> None: ...
        def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

if TYPE_CHECKING:
    from chimeraseg.modeling.settings import LossSettings

__all__ = ["LossFactory", "build_loss", "register_loss", "registered_losses"]

# Builds one loss module from the criterion's settings (a class taking ``settings`` fits).
LossFactory = Callable[["LossSettings"], nn.Module]
_LOSSES: dict[str, LossFactory] = {}


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Decorator registering a loss factory (usually the loss class) under ``name``.

    Raises:
        ValueError: when ``name`` does not start with ``"loss_"`` (detectron2 sums the entries
            whose names do) or is registered already.
    """

    def add(factory: LossFactory) -> LossFactory:
        if not name.startswith("loss_"):
            raise ValueError(f"register_loss: name {name!r} must start with 'loss_'")
        if name in _LOSSES:
            raise ValueError(f"register_loss: {name!r} is registered already ({_LOSSES[name]})")
        _LOSSES[name] = factory
        return factory

    return add


def registered_losses() -> tuple[str, ...]:
    """The registered loss names, in registration order."""
    return tuple(_LOSSES)


def build_loss(name: str, settings: LossSettings) -> nn.Module:
    """The loss registered under ``name``, built from ``settings``.

    Raises:
        ValueError: naming the unknown loss and the registered ones.
    """
    if name not in _LOSSES:
        raise ValueError(
            f"loss {name!r} is not registered (registered: {list(_LOSSES)}); register it with "
            "chimeraseg.modeling.losses.register_loss"
        )
    return _LOSSES[name](settings)
