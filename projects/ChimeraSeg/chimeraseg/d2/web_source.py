"""The web demo's detectron2 model source: a trained ChimeraSeg from a config and its weights.

Implements :class:`~chimeraseg.demo.source.SegmentationSource` over the demo predictor
(:mod:`chimeraseg.d2.predictor`): one model, loaded once, shared by every session; each call gets
its session's text embeddings, so the model's own vocabulary is never changed after loading.
"""

from __future__ import annotations

import numpy as np
import torch

from chimeraseg.d2.predictor import ChimeraSegDemo, VisualizerDrawer, build_demo

__all__ = ["D2Source", "build_d2_source"]


class D2Source:
    """A ChimeraSeg meta-architecture behind the web demo's source interface.

    Args:
        demo: The predictor (weights loaded; its vocabulary is the test dataset's).
        description: One line naming the config, the weights and the CLIP.
    """

    def __init__(self, demo: ChimeraSegDemo, description: str) -> None:
        self.demo = demo
        model = demo.model
        self.description = description
        self.default_vocabulary = list(model.vocabulary)
        self.default_unseen = torch.nonzero(model.unseen_mask).flatten().tolist()
        self.default_gamma = float(demo.gamma)
        self._default_colors = list(demo.metadata.stuff_colors)

    def encode(self, names: list[str]) -> torch.Tensor:
        """``(N, D)`` text embeddings on the model's device."""
        with torch.inference_mode():
            return self.demo.model.encode_vocabulary(names)

    def predict(
        self, image_rgb: np.ndarray, text: torch.Tensor, unseen: torch.Tensor, gamma: float
    ) -> np.ndarray:
        """``(H, W)`` class ids (the evaluator's γ rule, computed band by band)."""
        with torch.inference_mode():
            return self.demo.predict_with(image_rgb, text, unseen, gamma).numpy()

    def class_similarity(self, image_rgb: np.ndarray, region: np.ndarray) -> np.ndarray | None:
        """``(H, W)`` cosine of the region's CLS token with ``Fc``; None without the teacher.

        Pixels outside ``region`` are set to the model's pixel mean before the teacher runs.
        """
        model = self.demo.model
        if model.model.teacher is None:
            return None
        mean = model.model.pixel_mean.flatten().cpu().numpy()  # (3,) RGB 0..255
        masked = np.where(region[..., None], image_rgb, mean.round().astype(np.uint8))
        with torch.inference_mode():
            inputs, cls_inputs = self.demo.inputs(image_rgb), self.demo.inputs(masked)
            return model.similarity_map(inputs, cls_inputs)[0].float().cpu().numpy()

    def colors(self, names: list[str]) -> list[list[int]]:
        """The dataset's colours for its own vocabulary, else detectron2's colormap."""
        if list(names) == self.default_vocabulary:
            return [list(c) for c in self._default_colors]
        return [
            list(c) for c in VisualizerDrawer(names, [False] * len(names)).metadata.stuff_colors
        ]

    def overlay(
        self, image_rgb: np.ndarray, prediction: np.ndarray, labels: list[str], colors: list
    ) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB: detectron2's Visualizer overlay with region names."""
        return VisualizerDrawer(labels, [False] * len(labels), colors).overlay(
            image_rgb, prediction
        )


def build_d2_source(config_file: str, opts: list[str], description: str) -> D2Source:
    """Builds the model of a config (``MODEL.WEIGHTS`` loaded and verified) with its teacher.

    Raises:
        chimeraseg.utils.checkpoint_io.CheckpointError: no or unreadable ``MODEL.WEIGHTS``
            (unless ``MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS``).
    """
    return D2Source(build_demo(config_file, opts, similarity_map=True), description)
