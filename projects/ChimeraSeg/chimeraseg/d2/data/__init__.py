"""detectron2 dataset layer: registrations (on import), the zero-shot mapper, augmentations."""

from chimeraseg.d2.data import (  # noqa: F401 -- imported for their registrations
    register_ade20k,
    register_coco_stuff_zs,
    register_pascal_context_459,
    register_pascal_context_zs,
    register_synthetic_zs,
    register_voc_zs,
)
from chimeraseg.d2.data.augmentations import (
    PhotometricDistortion,
    RandomRatioResize,
    build_zero_shot_augmentations,
)
from chimeraseg.d2.data.mapper import ZeroShotDatasetMapper

__all__ = [
    "PhotometricDistortion",
    "RandomRatioResize",
    "ZeroShotDatasetMapper",
    "build_zero_shot_augmentations",
]
