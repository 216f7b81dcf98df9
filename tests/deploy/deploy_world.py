"""A Chimera-Seg trained on the synthetic world inside the test session, and its ONNX export.

Small on purpose: a world CLIP of a few dozen steps (the suite's test model config) and a short
plain-PyTorch training run. Parity needs a trained model, not a good one: the logits separate
the classes, so argmax agreement measures the export, not ties of an untrained head.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from chimeraseg.data.splits import get_split
from chimeraseg.data.synthetic import make_synthetic_dataset
from chimeraseg.deploy.export import ExportOptions, export_model
from chimeraseg.modeling.inference import InferenceConfig
from chimeraseg.world.clip_training import WorldClipConfig, train_world_clip
from chimeraseg.world.quick_run import QuickRunConfig, build_model, load_split, train

WORLD_JSON = str(Path(__file__).parents[1] / "world" / "chimeraseg-world-vit-test.json")
CLIP_CONFIG = WorldClipConfig(
    model_config=WORLD_JSON,
    steps=40,
    batch_size=16,
    pool_size=128,
    render_size=64,
    min_crop=48,
    min_mean_accuracy=0.0,
    min_class_accuracy=0.0,
)
RUN = QuickRunConfig(iterations=40, batch_size=4, crop=64, base_short_side=80, k_init=150, seed=0)
# Sliding windows smaller than the 80x100 validation images, so several overlap.
SLIDE = InferenceConfig(mode="whole", slide_crop=(64, 64), slide_stride=(40, 40))
BAKED = ["grass", "sky, blue sky", "purple cat"]  # a vocabulary partly outside training
BAKED_UNSEEN = [2]


@dataclasses.dataclass
class Trained:
    """The trained model, its CLIP, the validation samples and the export folder."""

    model: torch.nn.Module
    clip: torch.nn.Module
    val: list[tuple[np.ndarray, np.ndarray]]
    folder: Path
    options: ExportOptions
    dataset: str


def train_and_export(root: Path) -> Trained:
    """Trains the small model, exports it (int8 and a baked vocabulary too) under ``root``."""
    dataset = make_synthetic_dataset(str(root), num_train=16, num_val=6, image_hw=(80, 100))
    torch.manual_seed(0)
    clip, _ = train_world_clip(CLIP_CONFIG, progress=False)
    model = build_model(clip, RUN)
    train(model, load_split(dataset, "train"), RUN)
    model = model.eval()
    model.inference = SLIDE
    options = ExportOptions(
        templates=RUN.templates,
        gamma=RUN.gamma,
        train_vocabulary=list(get_split("synthetic").class_names),
        size_divisibility=32,
        test_resize=(0, 0),
        source={"test": "tests/deploy"},
    )
    folder = root / "export"
    export_model(model, clip, folder, options, BAKED, BAKED_UNSEEN, int8=True)
    return Trained(model, clip, load_split(dataset, "val"), folder, options, dataset)
