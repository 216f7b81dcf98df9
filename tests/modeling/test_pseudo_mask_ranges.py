"""PseudoMaskConfig refuses thresholds outside their range (they would silently never fire)."""

from __future__ import annotations

import pytest

from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig


def test_pseudo_mask_config_refuses_out_of_range_thresholds() -> None:
    with pytest.raises(ValueError, match=r"unseen_threshold=5\.0 must be in \[0\.0, 1\.0\]"):
        PseudoMaskConfig(unseen_threshold=5.0)
    with pytest.raises(ValueError, match=r"merge_threshold=9\.0 must be in \[-1\.0, 1\.0\]"):
        PseudoMaskConfig(merge_threshold=9.0)
    with pytest.raises(ValueError, match=r"unseen_temperature=nan must be > 0"):
        PseudoMaskConfig(unseen_temperature=float("nan"))
