"""Config glue of the ONNX export: a detectron2 config + ``MODEL.WEIGHTS`` -> an export folder.

The export itself is :func:`chimeraseg.deploy.export.export_model` (no detectron2); this module
builds the trained model as the demo does and records what the runtime must repeat: the
templates, ``TEST.GAMMA``, the training vocabulary, the padding multiple of the
meta-architecture, the test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), and the
SHA-256 of the merged config and of the weights file.
"""

from __future__ import annotations

import hashlib
import os

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from chimeraseg.clip.names import unseen_indices
from chimeraseg.d2.checkpoint import load_trained_weights
from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.world_clip import fill_world_clip
from chimeraseg.deploy.export import ExportOptions, export_model
from chimeraseg.deploy.metadata import ExportMetadata, file_sha256

__all__ = ["export_from_config"]


def export_from_config(
    config_file: str,
    opts: list[str],
    output: str,
    vocabulary: list[str] | None = None,
    unseen: list[str] | None = None,
    int8: bool = False,
) -> ExportMetadata:
    """Builds the model of ``config_file`` (weights loaded and verified) and exports it.

    Args:
        config_file: YAML config.
        opts: ``KEY VALUE`` overrides (``MODEL.WEIGHTS`` among them).
        output: the export folder (must not exist or be empty).
        vocabulary: also bake these class names into ``segmenter.onnx``.
        unseen: names of ``vocabulary`` that receive γ.
        int8: also write the int8 image graph.

    Returns:
        The metadata written.
    """
    if unseen and not vocabulary:
        raise ValueError("--unseen needs --vocabulary (the baked vocabulary)")
    unseen_ids = unseen_indices(vocabulary or [], unseen or [])
    cfg = get_chimeraseg_cfg(config_file, list(opts) + ["MODEL.CHIMERASEG.BUILD_TEACHER", "False"])
    fill_world_clip(cfg)  # the world CLIP of a world-CLIP config, as training used it
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    load_trained_weights(model, cfg)
    weights = cfg.MODEL.WEIGHTS
    source = {
        "config_file": os.path.abspath(config_file),
        "config_sha256": hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest(),
        "weights": os.path.abspath(weights) if weights else None,
        "weights_sha256": file_sha256(weights) if weights else None,
    }
    options = ExportOptions(
        templates=cfg.MODEL.CLIP.TEXT_TEMPLATES,
        gamma=cfg.TEST.GAMMA,
        train_vocabulary=model.train_vocabulary,
        size_divisibility=model.size_divisibility,
        test_resize=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
        source=source,
        # one colour per class of train_vocabulary: the training dataset's, not the test set's
        colors=MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("stuff_colors"),
    )
    return export_model(
        model.model, model.clip_model, output, options, vocabulary, unseen_ids, int8=int8
    )
