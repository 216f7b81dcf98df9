"""The demo's predictor: a trained model on RGB images, drawn with detectron2's Visualizer.

``tools/demo.py`` (images, folders, videos, any vocabulary) and ``tools/run_demo.py``
(``make demo``) use it, as Mask2Former's demo uses its ``demo/predictor.py``. Predictions follow
the evaluator's γ rule (``argmax(z + γ·[unseen])``, as
:func:`~chimeraseg.evaluation.gamma_sweep.biased_argmax`).
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import Metadata, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

from chimeraseg.clip.names import unseen_indices
from chimeraseg.d2.config import get_chimeraseg_cfg
from chimeraseg.d2.data import build_zero_shot_augmentations
from chimeraseg.d2.meta_arch import ChimeraSeg
from chimeraseg.d2.trainer import load_trained_weights
from chimeraseg.d2.world_clip import fill_world_clip
from chimeraseg.data.splits import check_distinct_class_names
from chimeraseg.demo.render import heat_overlay
from chimeraseg.deploy.schema import check_gamma
from chimeraseg.modeling.inference import resize_argmax
from chimeraseg.utils.demo_images import UNSEEN_SUFFIX, legend_strip, run_on_images

__all__ = [
    "ChimeraSegDemo",
    "VisualizerDrawer",
    "build_demo",
    "run_on_images",
    "unseen_indices",
]


class VisualizerDrawer:
    """Draws label maps with detectron2's Visualizer (regions outlined and named) and a legend.

    Args:
        names: the vocabulary.
        unseen: per class, whether it is unseen (marked ``" *"``).
        colors: RGB colour per class (None = detectron2's colormap).
    """

    def __init__(
        self, names: list[str], unseen: list[bool], colors: list[list[int]] | None = None
    ) -> None:
        palette = colormap(rgb=True, maximum=255)
        self.metadata = Metadata(
            stuff_classes=[n + (UNSEEN_SUFFIX if u else "") for n, u in zip(names, unseen)],
            stuff_colors=colors or [palette[i % len(palette)].tolist() for i in range(len(names))],
        )

    def overlay(self, image_rgb: np.ndarray, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(H, W, 3)`` RGB: ``(H, W)`` labels drawn on the image, regions named (no legend)."""
        vis = Visualizer(image_rgb, self.metadata, instance_mode=ColorMode.IMAGE)
        labels = torch.as_tensor(np.asarray(labels))
        return vis.draw_sem_seg(labels, area_threshold=None, alpha=0.5).get_image()

    def __call__(self, image_rgb: np.ndarray, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(H + legend, W, 3)`` RGB overlay of ``(H, W)`` labels on ``(H, W, 3)`` RGB."""
        overlay = self.overlay(image_rgb, labels)
        labels = torch.as_tensor(np.asarray(labels))
        meta = self.metadata
        legend = legend_strip(
            labels.numpy(), meta.stuff_classes, meta.stuff_colors, overlay.shape[1]
        )
        return np.concatenate([overlay, legend], axis=0)


class ChimeraSegDemo:
    """Runs a ChimeraSeg model on RGB images and draws the predictions.

    Args:
        model: the meta-architecture (weights loaded).
        augmentations: test-time resize (from ``INPUT.MIN_SIZE_TEST``).
        gamma: bias added to the unseen classes' logits for display.
        colors: RGB colour per vocabulary class (None = detectron2's colormap).
    """

    def __init__(
        self,
        model: ChimeraSeg,
        augmentations: list[T.Augmentation],
        gamma: float,
        colors: list[list[int]] | None = None,
    ) -> None:
        self.model = model.eval()
        self.augmentations = T.AugmentationList(augmentations)
        self.gamma = gamma
        self.drawer = VisualizerDrawer(model.vocabulary, model.unseen_mask.tolist(), colors)
        self.metadata = self.drawer.metadata

    def inputs(self, image_rgb: np.ndarray) -> list[dict]:
        """One detectron2 input dict: resized ``(3, H', W')`` image and the original size."""
        aug = T.AugInput(image_rgb)
        self.augmentations(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        return [{"image": tensor, "height": image_rgb.shape[0], "width": image_rgb.shape[1]}]

    @torch.no_grad()
    def predict(self, image_rgb: np.ndarray) -> torch.Tensor:
        """``(H, W)`` class ids of an ``(H, W, 3)`` uint8 RGB image (the evaluator's γ rule).

        Memory is bounded by the image, not by classes x pixels: the labels are computed from
        the head's logits a band of rows at a time (:func:`resize_argmax`), never holding
        ``(N, H, W)`` logits.
        """
        return self.predict_with(image_rgb, None, self.model.unseen_mask, self.gamma)

    @torch.no_grad()
    def predict_with(
        self,
        image_rgb: np.ndarray,
        text: torch.Tensor | None,
        unseen_mask: torch.Tensor,
        gamma: float,
    ) -> torch.Tensor:
        """:meth:`predict` over ``(N, D)`` text embeddings of any vocabulary (None = the
        model's), its ``(N,)`` bool unseen mask and γ; the model itself is not changed."""
        ((logits, padded, size, out_hw),) = self.model.low_resolution_logits(
            self.inputs(image_rgb), vocabulary_embeddings=text
        )
        if tuple(logits.shape[-2:]) == padded:  # slide: logits on the padded input's grid
            logits, padded = logits[:, : size[0], : size[1]], size
        bias = unseen_mask.to(logits.device).float() * float(gamma)  # (N,)
        return resize_argmax(logits, padded, size, out_hw, bias).cpu()

    @property
    def names(self) -> list[str]:
        """The vocabulary."""
        return list(self.model.vocabulary)

    @property
    def unseen(self) -> list[bool]:
        """Per class, whether it receives γ."""
        return self.model.unseen_mask.tolist()

    def draw(self, image_rgb: np.ndarray, prediction: torch.Tensor) -> np.ndarray:
        """``(H, W, 3)`` RGB overlay with region labels and a legend strip."""
        return self.drawer(image_rgb, prediction)

    @torch.no_grad()
    def similarity(self, image_rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` RGB overlay of the teacher-CLS-to-``Fc`` cosine heat map (Fig. 8)."""
        sim = self.model.similarity_map(self.inputs(image_rgb))[0].float().cpu().numpy()
        return heat_overlay(image_rgb, sim)  # (H, W, 3)


def build_demo(
    config_file: str,
    opts: list[str],
    vocabulary: list[str] | None = None,
    unseen: list[str] | None = None,
    gamma: float | None = None,
    similarity_map: bool = False,
) -> ChimeraSegDemo:
    """Builds the model from a config (``MODEL.WEIGHTS`` loaded and verified) and the demo.

    Args:
        config_file: YAML config.
        opts: ``KEY VALUE`` overrides.
        vocabulary: class names; None = the test dataset's classes (an empty list is an error).
        unseen: names of ``vocabulary`` marked unseen (they receive gamma).
        gamma: unseen-logit bias (None = ``TEST.GAMMA``).
        similarity_map: also build the CLIP teacher for the Fig. 8 maps.

    Raises:
        ValueError: an empty ``vocabulary``, a name given twice in it (naming it), an
            ``unseen`` name that is not in it, or a ``gamma`` that is not finite.
        chimeraseg.utils.checkpoint_io.CheckpointError: no ``MODEL.WEIGHTS`` (unless
            ``MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS``) or an unreadable weights file.
    """
    _check_vocabulary(vocabulary, unseen)
    if gamma is not None:
        gamma = check_gamma(gamma, "--gamma")  # before the model is built
    opts = list(opts) + ["MODEL.CHIMERASEG.BUILD_TEACHER", str(bool(similarity_map))]
    cfg = get_chimeraseg_cfg(config_file, opts)
    fill_world_clip(cfg)
    model = build_model(cfg)
    load_trained_weights(model, cfg)
    colors = None
    if vocabulary is not None:
        model.set_vocabulary(vocabulary, unseen_indices(vocabulary, unseen or []))
    else:
        colors = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("stuff_colors")
    return ChimeraSegDemo(
        model,
        build_zero_shot_augmentations(cfg, is_train=False),
        check_gamma(cfg.TEST.GAMMA, "TEST.GAMMA") if gamma is None else gamma,
        colors=colors,
    )


def _check_vocabulary(vocabulary: list[str] | None, unseen: list[str] | None) -> None:
    """Raises for an empty vocabulary or unseen names outside it (before the model is built)."""
    if vocabulary is not None and not vocabulary:
        raise ValueError("the vocabulary is empty: give at least one class name")
    if vocabulary is not None:
        check_distinct_class_names(vocabulary, "the vocabulary")  # a twin is never predicted
    unseen_indices(vocabulary or [], unseen or [])
