"""Everything ChimeraSeg takes from CLIP (open_clip based, no detectron2).

- :mod:`~chimeraseg.clip.loading`: ``load_clip`` (offline-safe, frozen), ``clip_reference``.
- :mod:`~chimeraseg.clip.teacher`: ``CLIPTeacher`` (``Cg`` and dense value-path features).
- :mod:`~chimeraseg.clip.partial`: ``build_vencoder``, ``build_visual_projection``,
  ``build_ln_post`` (copies of CLIP pieces for the CLIP Semantic Head).
- :mod:`~chimeraseg.clip.text`: ``encode_class_names`` (prompt ensembles, synonyms, disk cache).
"""

from __future__ import annotations

from chimeraseg.clip.loading import clip_reference, file_sha256, load_clip, verify_clip_reference
from chimeraseg.clip.names import humanize_class_name
from chimeraseg.clip.partial import (
    FrozenAwareLayerNorm,
    ValueBlock,
    VEncoder,
    VisualProjection,
    build_ln_post,
    build_vencoder,
    build_visual_projection,
)
from chimeraseg.clip.teacher import CLIPTeacher, TeacherOutput
from chimeraseg.clip.templates import TEMPLATE_SETS, resolve_templates
from chimeraseg.clip.text import encode_class_names

__all__ = [
    "CLIPTeacher",
    "FrozenAwareLayerNorm",
    "TEMPLATE_SETS",
    "TeacherOutput",
    "ValueBlock",
    "VEncoder",
    "VisualProjection",
    "build_ln_post",
    "build_vencoder",
    "build_visual_projection",
    "clip_reference",
    "encode_class_names",
    "file_sha256",
    "humanize_class_name",
    "load_clip",
    "resolve_templates",
    "verify_clip_reference",
]
