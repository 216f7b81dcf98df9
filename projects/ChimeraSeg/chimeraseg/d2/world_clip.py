"""The one place a config that names the synthetic world's CLIP gets that CLIP's weights.

``configs/synthetic/chimeraseg_mitb0_synthetic.yaml`` names the world model
(``MODEL.CLIP.NAME: configs/clip/chimeraseg-world-vit.json``) and gives no weights; every tool
(``tools/train_net.py``, ``tools/run_demo.py``, the demos through
:func:`chimeraseg.d2.predictor.build_demo`) fills them in with :func:`fill_world_clip`: found in
the cache, or trained on first use and cached (:func:`chimeraseg.world.cache.world_clip_for`).
"""

from __future__ import annotations

from detectron2.config import CfgNode

from chimeraseg.world.cache import world_clip_for

__all__ = ["WORLD_CLIP_LINE", "fill_world_clip"]

# How the line of :func:`fill_world_clip` starts.
WORLD_CLIP_LINE = "CLIP: the synthetic world's CLIP"


def fill_world_clip(cfg: CfgNode) -> str | None:
    """Sets ``MODEL.CLIP.PRETRAINED`` to the world CLIP when the config needs it.

    A config whose ``MODEL.CLIP.NAME`` is the world model and whose ``MODEL.CLIP.PRETRAINED`` is
    empty gets the cached world CLIP (trained now if the cache has none); random-CLIP smoke runs
    (``MODEL.CLIP.ALLOW_RANDOM_INIT``) and any other CLIP are left as they are. A frozen config
    stays frozen.

    Args:
        cfg: a ChimeraSeg config.

    Returns:
        One line for the log saying which CLIP and why, or None when nothing was filled in.

    Raises:
        chimeraseg.world.clip_training.WorldClipQualityError: a newly trained CLIP missed its
            quality gate.
        chimeraseg.world.cache.WorldClipCacheError: a damaged cache entry (the message gives the
            ``tools/train_world_clip.py --retrain`` command) or an unwritable cache.
    """
    c = cfg.MODEL.CLIP
    world = None if c.ALLOW_RANDOM_INIT else world_clip_for(c.NAME, c.PRETRAINED)
    if world is None:
        return None
    frozen = cfg.is_frozen()
    cfg.defrost()
    c.PRETRAINED = str(world.checkpoint)
    if frozen:
        cfg.freeze()
    origin = "trained now" if world.trained_now else "from the cache"
    return (
        f"{WORLD_CLIP_LINE} ({origin}: {world.checkpoint}), because the config's "
        f"MODEL.CLIP.NAME is the world model and gives no weights; {world.report['message']}"
    )
