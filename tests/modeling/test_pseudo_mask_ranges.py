"""PseudoMaskConfig refuses thresholds outside their range (they would silently never fire)."""

from __future__ import annotations

import re

import pytest

from chimeraseg.modeling.pseudo_masks import PseudoMaskConfig


def test_pseudo_mask_config_refuses_out_of_range_thresholds() -> None:
    with pytest.raises(ValueError, match=r"unseen_threshold=5\.0 must be in \[0\.0, 1\.0\]"):
        PseudoMaskConfig(unseen_threshold=5.0)
    with pytest.raises(ValueError, match=r"merge_threshold=9\.0 must be in \[-1\.0, 1\.0\]"):
        PseudoMaskConfig(merge_threshold=9.0)
    with pytest.raises(ValueError, match=r"unseen_temperature=nan must be > 0"):
        PseudoMaskConfig(unseen_temperature=float("nan"))


def test_pseudo_mask_config_accepts_the_range_edges() -> None:
    """Scale 1, zero iterations, ``min_area`` 0, ``max_regions`` 0 and thresholds at 1 are valid."""
    config = PseudoMaskConfig(
        scales=(1,),
        kmeans_iters=0,
        min_area=0,
        max_regions=0,
        merge_threshold=1.0,
        region_ignore_fraction=1.0,
        seed_region_fraction=1.0,
        unseen_threshold=1.0,
    )
    assert config.scales == (1,) and config.min_area == 0 and config.max_regions == 0


def test_pseudo_mask_config_refuses_bad_counts_and_temperatures() -> None:
    """Non-positive scales, negative counts and non-finite or non-positive temperatures raise
    with the full message."""
    for scales in [(0,), (4, -2)]:
        with pytest.raises(ValueError, match=re.escape(f"PseudoMaskConfig.scales={scales} must")):
            PseudoMaskConfig(scales=scales)
    with pytest.raises(
        ValueError, match=r"^PseudoMaskConfig\.scales=\(\) must be positive integers$"
    ):
        PseudoMaskConfig(scales=())
    counts = r"^PseudoMaskConfig: kmeans_iters={} and min_area={} must be >= 0$"
    default = PseudoMaskConfig()
    with pytest.raises(ValueError, match=counts.format(-1, default.min_area)):
        PseudoMaskConfig(kmeans_iters=-1)
    with pytest.raises(ValueError, match=counts.format(default.kmeans_iters, -1)):
        PseudoMaskConfig(min_area=-1)
    with pytest.raises(ValueError, match=r"^PseudoMaskConfig\.max_regions=-1 must be >= 0$"):
        PseudoMaskConfig(max_regions=-1)
    for temperature in ["inf", "0.0", "-1.0"]:
        message = rf"^PseudoMaskConfig\.unseen_temperature={temperature} must be > 0$"
        with pytest.raises(ValueError, match=message):
            PseudoMaskConfig(unseen_temperature=float(temperature))
