"""The detectron2 layer of ChimeraSeg; importing it registers everything with detectron2.

Registered: the student backbones (``D2MixTransformer``, ``D2ViTB16``), the datasets of
``chimeraseg.d2.data`` (under ``$DETECTRON2_DATASETS``) and the meta-architecture ``ChimeraSeg``.
"""

from chimeraseg.d2 import backbone, data, meta_arch  # noqa: F401 -- imported for registration
from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
from chimeraseg.d2.config import add_chimeraseg_config, get_chimeraseg_cfg
from chimeraseg.d2.meta_arch import ChimeraSeg
from chimeraseg.d2.trainer import ChimeraSegTrainer

__all__ = [
    "ChimeraSeg",
    "ChimeraSegCheckpointer",
    "ChimeraSegTrainer",
    "add_chimeraseg_config",
    "get_chimeraseg_cfg",
]
