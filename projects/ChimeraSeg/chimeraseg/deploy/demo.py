"""The demo on an ONNX export (``tools/demo.py --onnx``): the same outputs, without detectron2.

:class:`OnnxDemo` is a demo object of :func:`chimeraseg.utils.demo_images.run_on_images`; its
drawing is passed in (detectron2's Visualizer when installed, else a colour blend).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chimeraseg.deploy.runtime import OnnxSegmenter
from chimeraseg.deploy.schema import check_gamma
from chimeraseg.utils.demo_images import UNSEEN_SUFFIX, blend_overlay, legend_strip, palette

__all__ = ["BlendDrawer", "OnnxDemo", "build_onnx_demo"]

# Draws (H, W) labels on an (H, W, 3) RGB image -> (H', W, 3) RGB.
DrawFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class BlendDrawer:
    """Colour blend plus the demo's legend (drawing without detectron2).

    Args:
        names: the vocabulary.
        unseen: per class, whether it is unseen (marked ``" *"``).
        colors: RGB colour per class (None = a fixed palette).
    """

    def __init__(
        self, names: list[str], unseen: list[bool], colors: list[list[int]] | None = None
    ) -> None:
        self.names = [n + (UNSEEN_SUFFIX if u else "") for n, u in zip(names, unseen)]
        self.colors = colors or palette(len(names))

    def __call__(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        overlay = blend_overlay(image, labels, self.colors)
        legend = legend_strip(labels, self.names, self.colors, overlay.shape[1])
        return np.concatenate([overlay, legend], axis=0)


class OnnxDemo:
    """Predicts with an :class:`OnnxSegmenter` and draws with ``draw``.

    Args:
        segmenter: the runtime, its vocabulary set.
        gamma: bias of the unseen classes.
        draw: the drawing function (None = :class:`BlendDrawer`).
    """

    def __init__(self, segmenter: OnnxSegmenter, gamma: float, draw: DrawFn | None = None) -> None:
        self.segmenter = segmenter
        self.gamma = check_gamma(gamma)
        self.draw = draw or BlendDrawer(self.names, self.unseen)

    @property
    def names(self) -> list[str]:
        """The vocabulary."""
        return list(self.segmenter.names)

    @property
    def unseen(self) -> list[bool]:
        """Per class, whether it receives γ."""
        return self.segmenter.unseen_mask.tolist()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` int64 class ids of an ``(H, W, 3)`` uint8 RGB image (the γ rule)."""
        return self.segmenter.predict(image, self.gamma).labels

    def similarity(self, image: np.ndarray) -> np.ndarray:
        """Not available: the CLS similarity map needs CLIP's image encoder (not exported)."""
        raise ValueError(
            "--similarity-map needs the PyTorch model (the export has no CLIP image encoder)"
        )


def build_onnx_demo(
    folder: str,
    vocabulary: list[str] | None,
    unseen: list[str] | None,
    gamma: float | None,
    draw_factory: Callable[..., DrawFn] | None = None,
    graph: str | None = None,
) -> OnnxDemo:
    """The ONNX demo of an export folder, for its default or a given vocabulary.

    Args:
        folder: the export folder.
        vocabulary: class names (None = the baked vocabulary, else the training vocabulary).
        unseen: names of ``vocabulary`` that receive γ.
        gamma: unseen bias (None = the export's ``TEST.GAMMA``).
        draw_factory: ``(names, unseen flags, colors) -> draw function`` (None = blend).
        graph: the runtime's graph choice (None = baked for the default vocabulary, else fp32).

    Raises:
        ExportError: a folder that is not a valid, unchanged export (one line naming the file,
            key or value).
        ValueError: an empty vocabulary, a name given twice (after its prompt spelling), an
            unseen name outside it, or a γ that is not finite.
    """
    gamma = None if gamma is None else check_gamma(gamma, "--gamma")
    if vocabulary is not None and not vocabulary:
        raise ValueError("the vocabulary is empty: give at least one class name")
    if vocabulary is not None:
        from chimeraseg.data.spellings import check_distinct_class_names

        check_distinct_class_names(vocabulary, "the vocabulary")  # a twin is never predicted
    if vocabulary is not None and graph is None:
        graph = "fp32"
    segmenter = OnnxSegmenter(folder, graph=graph)
    colors = None
    if vocabulary is not None:
        from chimeraseg.clip.names import unseen_indices

        segmenter.set_vocabulary(vocabulary, unseen_indices(vocabulary, unseen or []))
    elif segmenter.graph != "baked":
        colors = segmenter.metadata.colors  # the dataset's colours, as the PyTorch demo
    demo = OnnxDemo(segmenter, segmenter.metadata.gamma if gamma is None else gamma)
    if draw_factory is not None:
        demo.draw = draw_factory(demo.names, demo.unseen, colors)
    elif colors is not None:
        demo.draw = BlendDrawer(demo.names, demo.unseen, colors)
    return demo
