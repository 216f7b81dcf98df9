"""detectron2 meta-architecture ``ChimeraSeg``: batched dict inputs <-> ``ChimeraSegModel``.

Training: ``[{"image": (3, H, W) uint8 RGB, "sem_seg": (H, W) int64, "valid_hw" (optional)}]``
-> dict of losses (padding, of the mapper and of the batch, is marked invalid), with the SGD K
schedule driven by detectron2's ``EventStorage`` iteration (so ``--resume`` continues
it). Inference: ``[{"image", "height", "width"}]`` -> ``[{"sem_seg": (N, height, width)}]``
unbiased logits over the current vocabulary (gamma is added by the evaluator / the demo).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

from chimeraseg import IGNORE_LABEL
from chimeraseg.clip.loading import clip_reference, load_clip, verify_clip_reference
from chimeraseg.d2.config_checks import validate_chimeraseg_config
from chimeraseg.d2.data.register_common import zero_shot_metadata
from chimeraseg.d2.gpu_switches import to_channels_last
from chimeraseg.d2.settings import inference_config, settings_from_config
from chimeraseg.d2.text_embeddings import encode_vocabulary_once
from chimeraseg.modeling import ChimeraSegModel, build_chimeraseg_model
from chimeraseg.modeling.inference import resize_logits
from chimeraseg.utils import user_cache

__all__ = [
    "ChimeraSeg",
    "build_clip_from_config",
    "dataset_vocabulary",
    "inference_config",
    "valid_pixel_mask",
]

logger = logging.getLogger(__name__)


def build_clip_from_config(cfg: CfgNode) -> nn.Module:
    """Loads the frozen CLIP of ``MODEL.CLIP`` (tag or path; random only if allowed)."""
    c = cfg.MODEL.CLIP
    return load_clip(
        c.NAME,
        pretrained=c.PRETRAINED or None,
        allow_random_init=c.ALLOW_RANDOM_INIT,
        random_init_seed=c.RANDOM_INIT_SEED,
    )


def dataset_vocabulary(dataset_name: str) -> tuple[list[str], list[int], list[int]]:
    """``(class names, seen ids, unseen ids)`` from a registered dataset's metadata."""
    meta = zero_shot_metadata(dataset_name)
    return meta["stuff_classes"], meta["seen_classes"], meta["unseen_classes"]


@META_ARCH_REGISTRY.register()
class ChimeraSeg(nn.Module):
    """Chimera-Seg as a detectron2 meta-architecture (wraps :class:`ChimeraSegModel`).

    Args:
        model: the plain-PyTorch model (student, CSH, teacher, training text embeddings).
        clip_model: the frozen CLIP (text tower used by :meth:`set_vocabulary`); kept outside the
            module tree, so it is neither saved nor moved with the model.
        train_vocabulary: class names of the training split (checked against checkpoints).
        vocabulary: evaluation class names ``N``.
        unseen_ids: indices of the unseen classes in ``vocabulary``.
        text_templates: prompt templates for :meth:`set_vocabulary`.
        text_cache_dir: text-embedding cache directory (None = no cache).
        size_divisibility: batch padding multiple (ImageList).
        channels_last: keep the student backbone, its decoder and the batch images in
            channels-last memory format (``MODEL.CHANNELS_LAST``).
    """

    @configurable
    def __init__(
        self,
        *,
        model: ChimeraSegModel,
        clip_model: nn.Module,
        train_vocabulary: list[str],
        vocabulary: list[str],
        unseen_ids: list[int],
        text_templates: str | list[str],
        text_cache_dir: str | None,
        size_divisibility: int,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        if channels_last:
            to_channels_last(model.backbone)
            to_channels_last(model.decoder)
        object.__setattr__(self, "clip_model", clip_model)  # not a submodule: not checkpointed
        self.train_vocabulary = list(train_vocabulary)
        self.text_templates, self.text_cache_dir = text_templates, text_cache_dir
        self.size_divisibility = size_divisibility
        self.register_buffer("vocabulary_embeddings", torch.empty(0), persistent=False)
        self.register_buffer("unseen_mask", torch.empty(0, dtype=torch.bool), persistent=False)
        self.vocabulary: list[str] = []
        self.set_vocabulary(vocabulary, unseen_ids)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict[str, Any]:
        validate_chimeraseg_config(cfg)  # also for configs not built by get_chimeraseg_cfg
        m = cfg.MODEL.CHIMERASEG
        train_set = (cfg.DATASETS.TRAIN or cfg.DATASETS.TEST)[0]
        names, seen_ids, unseen_ids = dataset_vocabulary(train_set)
        clip_model = build_clip_from_config(cfg)
        templates = cfg.MODEL.CLIP.TEXT_TEMPLATES
        cache = user_cache.text_cache_dir(cfg.MODEL.CLIP.TEXT_CACHE_DIR)  # folder or None
        text = encode_vocabulary_once(clip_model, names, templates, cache, cfg.MODEL.DEVICE)
        backbone = build_backbone(cfg, ShapeSpec(channels=3))
        model = build_chimeraseg_model(
            settings_from_config(cfg),
            clip_model=clip_model,
            class_text=text,
            seen_ids=seen_ids,
            unseen_ids=unseen_ids,
            backbone=backbone,
        )
        test_set = (cfg.DATASETS.TEST or cfg.DATASETS.TRAIN)[0]
        vocabulary, _, test_unseen = dataset_vocabulary(test_set)
        return {
            "model": model.to(cfg.MODEL.DEVICE),
            "clip_model": clip_model,
            "train_vocabulary": names,
            "vocabulary": vocabulary,
            "unseen_ids": test_unseen,
            "text_templates": templates,
            "text_cache_dir": cache,
            "size_divisibility": max(m.SIZE_DIVISIBILITY, backbone.size_divisibility),
            "channels_last": cfg.MODEL.CHANNELS_LAST,
        }

    @property
    def device(self) -> torch.device:
        return self.model.pixel_mean.device

    def param_group_modules(self) -> dict[str, list[nn.Module]]:
        """Modules per LR group for the optimizer: ``backbone`` and ``head`` (decoder + CSH)."""
        return {"backbone": [self.model.backbone], "head": [self.model.decoder, self.model.head]}

    # ------------------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, names: list[str], unseen_ids: list[int] | None = None) -> None:
        """Sets the inference vocabulary (text embeddings are computed once and cached).

        Args:
            names: ``N`` class names (comma-separated synonyms allowed).
            unseen_ids: indices in ``names`` whose logits get gamma (evaluator / demo).
        """
        if not names:
            raise ValueError("the vocabulary is empty: give at least one class name")
        unseen_ids = list(unseen_ids or [])
        bad = [i for i in unseen_ids if not 0 <= i < len(names)]
        if bad:
            raise ValueError(f"unseen ids {bad} are outside the vocabulary of {len(names)} names")
        if list(names) != self.vocabulary:
            self.vocabulary_embeddings = self.encode_vocabulary(names)  # (N, D)
            self.vocabulary = list(names)
        mask = torch.zeros(len(names), dtype=torch.bool, device=self.device)
        mask[unseen_ids] = True
        self.unseen_mask = mask  # (N,)

    def encode_vocabulary(self, names: list[str]) -> torch.Tensor:
        """``(N, D)`` text embeddings of ``names`` on the model's device (on-disk cache used;
        encoded there by rank 0 and shared, see :func:`encode_vocabulary_once`)."""
        return encode_vocabulary_once(
            self.clip_model, list(names), self.text_templates, self.text_cache_dir, self.device
        )

    def set_vocabulary_from_dataset(self, dataset_name: str) -> None:
        """Uses a registered dataset's classes and unseen split as the vocabulary."""
        names, _, unseen = dataset_vocabulary(dataset_name)
        self.set_vocabulary(names, unseen)

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_metadata(self) -> dict[str, Any]:
        """CLIP reference and training vocabulary stored beside the weights."""
        m = self.model
        return {
            "clip": clip_reference(self.clip_model),
            "vocabulary": list(self.train_vocabulary),
            "seen_ids": list(m.seen_ids),
            "unseen_ids": list(m.unseen_ids),
            "num_classes": m.num_classes,
            "train_text_shape": [m.num_classes, int(m.seen_text.shape[1])],
            "setting": m.setting,
        }

    def verify_checkpoint_metadata(self, meta: dict[str, Any], source: str = "") -> None:
        """Raises if a checkpoint was trained with other CLIP weights or another vocabulary.

        Raises:
            ValueError: naming the checkpoint, the differing key and both values.
        """
        verify_clip_reference(self.clip_model, meta.get("clip", {}), source=source)
        mine = self.checkpoint_metadata()
        for key in ("train_text_shape", "vocabulary", "seen_ids", "unseen_ids"):
            if key in meta and list(_as_list(meta[key])) != list(_as_list(mine[key])):
                raise ValueError(
                    f"checkpoint '{source}' does not match the config's vocabulary: {key} = "
                    f"{meta[key]} in the checkpoint vs {mine[key]} from DATASETS.TRAIN"
                )

    # --------------------------------------------------------------------------------- forward
    def _images(self, batched_inputs: list[dict[str, Any]]) -> ImageList:
        """Pads ``(3, H, W)`` 0..255 RGB images with the pixel mean to ``size_divisibility``.

        The images cross to the device as they come (uint8 from the mapper: a quarter of the
        bytes of float32; non-blocking from pinned memory) and become float32 there.
        """
        mean = self.model.pixel_mean[0]  # (3, 1, 1)
        centred = [
            x["image"].to(self.device, non_blocking=True).to(torch.float32) - mean
            for x in batched_inputs
        ]
        images = ImageList.from_tensors(centred, self.size_divisibility)  # (B, 3, Hp, Wp)
        images.tensor = images.tensor + mean  # padding = mean colour, content unchanged
        if self.channels_last:
            images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, batched_inputs: list[dict[str, Any]]) -> Any:
        """Training losses (``self.training``) or per-image ``{"sem_seg": (N, H, W)}`` logits."""
        images = self._images(batched_inputs)
        if self.training:
            # uint8 / int16 from the mapper; widened to int64 on the device (values unchanged)
            labels = [x["sem_seg"].to(self.device, non_blocking=True) for x in batched_inputs]
            labels = ImageList.from_tensors(labels, self.size_divisibility, pad_value=IGNORE_LABEL)
            iteration = get_event_storage().iter
            valid = valid_pixel_mask(batched_inputs, images)  # (B, Hp, Wp)
            return self.model.forward_train(
                images.tensor, labels.tensor.long(), iteration, valid=valid
            )
        results = []
        for logit, padded, size, out_hw in self.low_resolution_logits(batched_inputs, images):
            if tuple(logit.shape[-2:]) == padded:
                results.append({"sem_seg": crop_and_resize(logit, size, out_hw)})
            else:  # one resample from the head's logits to the output size
                results.append({"sem_seg": resize_logits(logit, padded, size, out_hw)})
        return results

    def low_resolution_logits(
        self,
        batched_inputs: list[dict[str, Any]],
        images: ImageList | None = None,
        vocabulary_embeddings: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor, tuple[int, int], tuple[int, int], tuple[int, int]]]:
        """Per image ``(logits, padded_size, image_size, output_size)`` before the last resample.

        ``logits`` is ``(N, h, w)`` at the head's resolution (whole image) or ``(N, Hp, Wp)``
        (slide); the demo turns it into labels band by band (``resize_argmax``) instead of
        holding ``(N, height, width)`` logits. ``vocabulary_embeddings``: ``(N, D)`` of another
        vocabulary (None = the model's); the web demo passes each session's.
        """
        images = images if images is not None else self._images(batched_inputs)
        text = (
            self.vocabulary_embeddings if vocabulary_embeddings is None else vocabulary_embeddings
        )
        logits = self.model.forward_test(images.tensor, text, upsample=False)
        padded = tuple(images.tensor.shape[-2:])
        return [
            (logit, padded, tuple(size), (inp.get("height", size[0]), inp.get("width", size[1])))
            for logit, inp, size in zip(logits, batched_inputs, images.image_sizes)
        ]

    def similarity_map(
        self,
        batched_inputs: list[dict[str, Any]],
        cls_inputs: list[dict[str, Any]] | None = None,
    ) -> list[torch.Tensor]:
        """Cosine similarity of the teacher's CLS embedding with every ``Fc`` position (Fig. 8).

        Args:
            batched_inputs: The images whose ``Fc`` is compared.
            cls_inputs: Images whose CLS is used (None = the same); one with all but a class's
                region blanked gives that class's CLS token.

        Returns:
            Per image a ``(height, width)`` map in ``[-1, 1]``.
        """
        if self.model.teacher is None:
            raise RuntimeError("similarity_map needs the teacher (MODEL.CHIMERASEG.BUILD_TEACHER)")
        images = self._images(batched_inputs)
        cls_images = images if cls_inputs is None else self._images(cls_inputs)
        cls = self.model.teacher(cls_images.tensor).cls  # (B, D) unit
        fc = F.normalize(self.model.clip_features(images.tensor), dim=1)  # (B, D, h, w)
        sim = torch.einsum("bd,bdhw->bhw", cls.to(fc.dtype), fc)[:, None]  # (B, 1, h, w)
        sim = F.interpolate(sim, size=images.tensor.shape[-2:], mode="bilinear")
        out = []
        for s, inp, size in zip(sim, batched_inputs, images.image_sizes):
            h, w = inp.get("height", size[0]), inp.get("width", size[1])
            out.append(crop_and_resize(s, size, (h, w))[0])
        return out


def crop_and_resize(
    maps: torch.Tensor, image_size: tuple[int, int], output_size: tuple[int, int]
) -> torch.Tensor:
    """``(C, Hp, Wp)`` maps of a padded image -> ``(C, H, W)`` at the requested output size.

    Crops the padding (``image_size`` is the image inside the padded tensor), then resamples
    bilinearly to ``output_size`` only when it differs. detectron2's ``sem_seg_postprocess``
    resamples every time; at equal size that returns the same values (bilinear, no corner
    alignment) after a full-resolution pass over every class map.
    """
    crop = maps[:, : image_size[0], : image_size[1]]  # (C, H', W')
    if tuple(crop.shape[-2:]) == tuple(output_size):
        return crop
    resized = F.interpolate(crop[None], size=output_size, mode="bilinear", align_corners=False)
    return resized[0]  # (C, H, W)


def valid_pixel_mask(batched_inputs: list[dict[str, Any]], images: ImageList) -> torch.Tensor:
    """``(B, Hp, Wp)`` bool: the real pixels of each padded batch image (top-left block).

    Each input's ``valid_hw`` (recorded by the mapper before its padding) gives the block;
    without it, the image's own size (``images.image_sizes``, before batch padding).

    Raises:
        ValueError: naming the input when ``valid_hw`` is not within its image size.
    """
    b, _, hp, wp = images.tensor.shape
    valid = torch.zeros(b, hp, wp, dtype=torch.bool, device=images.tensor.device)
    for i, (inp, size) in enumerate(zip(batched_inputs, images.image_sizes)):
        h, w = (int(v) for v in inp.get("valid_hw", size))
        if not (0 < h <= size[0] and 0 < w <= size[1]):
            name = inp.get("file_name", f"batch input {i}")
            raise ValueError(
                f"{name}: valid_hw={(h, w)} must be positive and within the image size "
                f"{tuple(size)}"
            )
        valid[i, :h, :w] = True
    return valid


def _as_list(value: Any) -> list[Any]:
    """Lists and tuples as lists (checkpoint metadata may round-trip tuples as lists)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]
