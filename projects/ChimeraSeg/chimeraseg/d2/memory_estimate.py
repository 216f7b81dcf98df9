"""Computed (not measured) GPU memory of one training process of a config.

The estimate adds, for one process with the per-GPU batch ``IMS_PER_BATCH /
REFERENCE_WORLD_SIZE`` at the config's crop size (float32 training, ``SOLVER.AMP.ENABLED`` off):

* weights: every parameter and buffer of the model (student, CSH, frozen CLIP teacher), 4 bytes;
* gradients and AdamW state: 4 + 8 bytes per trainable parameter;
* activations: the bytes autograd keeps for the backward pass, counted exactly by running one
  training forward of the real model on the CPU (random CLIP weights of the same shapes) with
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once).

It leaves out what only a GPU run shows: the CUDA context and kernels, allocator caching and
fragmentation, transient buffers of the forward pass and cuDNN workspaces, so it is a lower bound
of ``torch.cuda.max_memory_allocated``. ``tools/estimate_gpu_memory.py`` prints it;
``tools/check_cluster.py`` puts it next to the peak it measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from chimeraseg.d2.config import get_chimeraseg_cfg

__all__ = [
    "GIB",
    "OFFLINE_OPTS",
    "MemoryEstimate",
    "estimate",
    "fake_batch",
    "images_per_gpu",
    "saved_activation_bytes",
]

GIB = 1024**3
# Random CLIP and student weights: same shapes as the real ones, no download.
OFFLINE_OPTS = [
    "MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.ALLOW_RANDOM_INIT", "True",
    "MODEL.CLIP.TEXT_CACHE_DIR", "", "MODEL.CLIP.TEXT_TEMPLATES", "single",
    "MODEL.CHIMERASEG.BACKBONE.PRETRAINED", "", "MODEL.DEVICE", "cpu",
]  # fmt: skip


class MemoryEstimate(NamedTuple):
    """Bytes of one training process (see the module docstring)."""

    config: str
    images_per_gpu: int
    crop: tuple[int, int]
    weights: int
    gradients_and_optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients_and_optimizer + self.activations


def images_per_gpu(cfg) -> int:
    """``IMS_PER_BATCH / REFERENCE_WORLD_SIZE`` (the whole batch when the reference is 0)."""
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE or 1
    return max(cfg.SOLVER.IMS_PER_BATCH // reference, 1)


def saved_activation_bytes(model: torch.nn.Module, batch: list[dict]) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), EventStorage(0):
        model(batch)
    return sum(n for ptr, n in storages.items() if ptr not in parameters)


def fake_batch(count: int, crop: tuple[int, int], seen_ids: list[int]) -> list[dict]:
    """``count`` random crops with random seen labels and an ignore band, as in training."""
    generator = torch.Generator().manual_seed(0)
    seen = torch.as_tensor(seen_ids)
    batch = []
    for _ in range(count):
        image = torch.randint(0, 256, (3, *crop), dtype=torch.uint8, generator=generator)
        label = seen[torch.randint(0, len(seen), crop, generator=generator)]
        label[: crop[0] // 4] = 255  # an ignore region, as unseen classes leave in training
        batch.append({"image": image, "sem_seg": label})
    return batch


def estimate(config_file: str, opts: Sequence[str] = ()) -> MemoryEstimate:
    """Builds the config's model on the CPU and computes its training memory per GPU.

    Args:
        config_file: the config.
        opts: further ``KEY VALUE`` overrides, applied after the random-weights ones.
    """
    cfg = get_chimeraseg_cfg(config_file, [*OFFLINE_OPTS, *opts, "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    count, crop = images_per_gpu(cfg), tuple(cfg.INPUT.CROP.SIZE)
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batch = fake_batch(count, crop, list(model.model.seen_ids))
    return MemoryEstimate(
        config=config_file,
        images_per_gpu=count,
        crop=crop,
        weights=weights,
        gradients_and_optimizer=trainable * (4 + 8),
        activations=saved_activation_bytes(model, batch),
    )
