"""The yacs config and the settings objects agree: one home for every default."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg.d2.config import get_chimeraseg_cfg  # noqa: E402
from chimeraseg.d2.settings import settings_from_config  # noqa: E402
from chimeraseg.modeling import ChimeraSegSettings  # noqa: E402


def test_default_config_is_the_default_settings() -> None:
    assert settings_from_config(get_chimeraseg_cfg()) == ChimeraSegSettings()


def test_config_keys_reach_their_settings() -> None:
    opts = ["MODEL.CHIMERASEG.SAM.WEIGHT", "0.0", "MODEL.CHIMERASEG.SEG_LOSS.WEIGHT", "2.0"]
    opts += ["MODEL.CHIMERASEG.CSH.NORM", "GN", "MODEL.CHIMERASEG.SGD.K_INIT", "77", "SEED", "3"]
    settings = settings_from_config(get_chimeraseg_cfg(opts=opts))
    assert settings.losses.weights == {"loss_seg": 2.0, "loss_sgd": 1.0, "loss_sam": 0.0}
    assert settings.head.norm == "GN" and settings.losses.sgd.k_init == 77
    assert settings.losses.seed == 3
