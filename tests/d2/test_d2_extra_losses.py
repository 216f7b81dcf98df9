"""A loss registered outside the package is weighted from the config and built by the meta-arch."""

from __future__ import annotations

import pytest
import torch
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG
from torch import nn

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from detectron2.modeling import build_model  # noqa: E402

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402
from chimeraseg.d2.settings import settings_from_config  # noqa: E402
from chimeraseg.modeling import LossSettings, TrainingOutputs, register_loss  # noqa: E402
from chimeraseg.modeling.losses import registered_losses  # noqa: E402

KEY = "MODEL.CHIMERASEG.EXTRA_LOSS_WEIGHTS"


class MeanFeatureLoss(nn.Module):
    """Toy loss: the squared mean of the CSH features."""

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()

    def forward(self, outputs: TrainingOutputs, iteration: int) -> torch.Tensor:
        return outputs.features.mean().pow(2)


if "loss_cfg_toy" not in registered_losses():
    register_loss("loss_cfg_toy")(MeanFeatureLoss)


def test_extra_loss_weight_reaches_the_criterion(tiny_opts: list[str]) -> None:
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, KEY, "[['loss_cfg_toy', 0.25]]"])
    built_in = settings_from_config(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts)).losses.weights
    assert list(built_in) == ["loss_seg", "loss_sgd", "loss_sam"]
    assert settings_from_config(cfg).losses.weights == {**built_in, "loss_cfg_toy": 0.25}
    criterion = build_model(cfg).model.criterion
    assert isinstance(criterion.losses["loss_cfg_toy"], MeanFeatureLoss)
    assert criterion.weight_dict["loss_cfg_toy"] == 0.25


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[['loss_sam', 0.5]]", "has its own key, MODEL.CHIMERASEG.SAM.WEIGHT"),
        ("[['loss_cfg_toy', 1], ['loss_cfg_toy', 2]]", "'loss_cfg_toy' is given twice"),
        ("[['loss_cfg_toy']]", r"\['loss_cfg_toy'\] is not a \[name, weight\] pair"),
        ("[['loss_cfg_toy', 'big']]", "is not a"),
    ],
)
def test_bad_extra_loss_weights_name_the_key(
    tiny_opts: list[str], value: str, message: str
) -> None:
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, KEY, value])
    with pytest.raises(ValueError, match=f"{KEY}: .*{message}"):
        settings_from_config(cfg)


def test_an_unregistered_extra_loss_is_named(tiny_opts: list[str]) -> None:
    cfg = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*tiny_opts, KEY, "[['loss_nowhere', 1.0]]"])
    with pytest.raises(ValueError, match="'loss_nowhere' is not registered"):
        build_model(cfg)
