"""The sync budget in its own setting: MiT-B0, COCO-Stuff split, random ViT-B/16 CLIP, 2 x 512²
(slow on a CPU: about a minute; tests/modeling/test_core_host_syncs.py has the fast variant)."""

from __future__ import annotations

import pytest
from test_core_host_syncs import SYNC_BUDGET, coco_stuff_model, count_step


@pytest.mark.slow
def test_coco_stuff_training_step_at_512_stays_within_the_sync_budget(vit_b16_clip) -> None:
    counter = count_step(coco_stuff_model(vit_b16_clip), 512)
    assert counter.syncs <= SYNC_BUDGET, counter.counts
