"""The detectron2 layer of ChimeraSeg; importing it registers everything with detectron2.

Registered: the student backbones (``D2MixTransformer``, ``D2ViTB16``), the datasets of
``chimeraseg.d2.data`` (under ``$DETECTRON2_DATASETS``) and the meta-architecture ``ChimeraSeg``.
"""

from chimeraseg.utils.tool_parser import quiet_import_warnings

# Before any detectron2 module: fvcore.nn and detectron2.modeling warn when imported
# (torch.jit.script deprecated); imported here once with those warnings, and only those, ignored.
quiet_import_warnings(("fvcore.nn", "detectron2.modeling"))

from chimeraseg.d2 import backbone, data, meta_arch  # noqa: E402, F401 -- registration
from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer  # noqa: E402
from chimeraseg.d2.config import add_chimeraseg_config, get_chimeraseg_cfg  # noqa: E402
from chimeraseg.d2.meta_arch import ChimeraSeg  # noqa: E402
from chimeraseg.d2.trainer import ChimeraSegTrainer  # noqa: E402

__all__ = [
    "ChimeraSeg",
    "ChimeraSegCheckpointer",
    "ChimeraSegTrainer",
    "add_chimeraseg_config",
    "get_chimeraseg_cfg",
]
