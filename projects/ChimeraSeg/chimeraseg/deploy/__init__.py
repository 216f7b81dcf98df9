"""Deployment: ONNX export of a trained model and a runtime without detectron2.

- :mod:`~chimeraseg.deploy.export`: ``export_model`` (torch; image, text and baked graphs).
- :mod:`~chimeraseg.deploy.runtime`: ``OnnxSegmenter`` (numpy + onnxruntime; the CLIP tokenizer
  only to embed new words).
- :mod:`~chimeraseg.deploy.metadata`: the folder layout and ``metadata.json``.
- :mod:`~chimeraseg.deploy.schema`: every metadata key's check (an export folder is untrusted
  input, docs/SECURITY.md); :mod:`~chimeraseg.deploy.loading` and
  :mod:`~chimeraseg.deploy.graph_file`: the checks of each graph before and after loading.

Importing this package imports neither torch nor onnxruntime.
"""

from __future__ import annotations

from chimeraseg.deploy.metadata import ExportError, ExportMetadata, read_metadata
from chimeraseg.deploy.runtime import GRAPHS, OnnxSegmenter, Prediction

__all__ = [
    "ExportError",
    "ExportMetadata",
    "GRAPHS",
    "OnnxSegmenter",
    "Prediction",
    "read_metadata",
]
