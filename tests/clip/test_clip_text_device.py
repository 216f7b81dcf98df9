"""Text embeddings run where the model is: the text tower moves, the shared visual tower stays."""

from __future__ import annotations

import torch
from chimeraseg_test_utils import build_tiny_clip
from torch.utils._python_dispatch import TorchDispatchMode

from chimeraseg.clip.text import encode_class_names, move_text_tower, text_tower_device


class _OpDevices(TorchDispatchMode):
    """Records the device of every tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device.type)
        return out


def _tower_devices(clip: torch.nn.Module) -> tuple[set[str], set[str]]:
    """Device types of the text tower's and the visual tower's tensors."""
    text, visual = set(), set()
    for name, t in [*clip.named_parameters(), *clip.named_buffers()]:
        (visual if name.startswith("visual.") else text).add(t.device.type)
    return text, visual


def test_text_tower_is_found_behind_a_moved_visual_tower() -> None:
    clip = build_tiny_clip()
    clip.visual.to("meta")  # as when the teacher sharing it moved with the model
    assert text_tower_device(clip) == torch.device("cpu")
    move_text_tower(clip, "meta")
    assert text_tower_device(clip) == torch.device("meta")
    assert _tower_devices(clip) == ({"meta"}, {"meta"})


def test_encoding_runs_on_the_requested_device_and_leaves_the_visual_tower() -> None:
    clip = build_tiny_clip()
    reference = encode_class_names(clip, ["cat", "wall-concrete"], "single")  # (2, D) on CPU
    ops = _OpDevices()
    with ops:
        moved = encode_class_names(clip, ["cat", "wall-concrete"], "single", device="meta")
    assert moved.device.type == "meta" and moved.shape == reference.shape
    assert "meta" in ops.devices  # the text encoder's operations ran on the model's device
    assert _tower_devices(clip) == ({"meta"}, {"cpu"})  # visual: untouched


def test_a_cache_hit_lands_on_the_requested_device_without_encoding(tmp_path) -> None:
    clip = build_tiny_clip()
    written = encode_class_names(clip, ["dog", "sky-other"], "single", cache_dir=tmp_path)
    ops = _OpDevices()
    with ops:
        hit = encode_class_names(clip, ["dog", "sky-other"], "single", tmp_path, device="meta")
    assert hit.device.type == "meta" and hit.shape == written.shape
    assert _tower_devices(clip) == ({"cpu"}, {"cpu"})  # nothing encoded, nothing moved
