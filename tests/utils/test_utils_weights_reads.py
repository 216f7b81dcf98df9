"""Every weights read goes through one reader: refused pickles never advise unsafe loading,
and files ChimeraSeg writes get the permissions of the user's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from chimeraseg.utils.checkpoint_io import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    read_weights_file,
    umask_file_mode,
)

UNSAFE_ADVICE = ("weights_only=False", "weights_only` set to `False", "will likely succeed")


class _Planter:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _assert_refused_safely(error: BaseException, path: Path, marker: Path) -> None:
    text = str(error)
    assert str(path) in text and "Python objects other than tensors" in text
    assert not any(advice in text for advice in UNSAFE_ADVICE)
    assert error.__cause__ is None and error.__suppress_context__  # no torch text in a traceback
    assert not marker.exists()


def test_the_reader_names_the_file_and_gives_the_callers_advice(tmp_path) -> None:
    marker, path = tmp_path / "planted", tmp_path / "w.pt"
    torch.save({"w": _Planter(marker)}, path)
    with pytest.raises(ValueError, match=r"'.*w\.pt' is not a thing: .*; do this") as info:
        read_weights_file(path, "thing", "do this", ValueError)
    _assert_refused_safely(info.value, path, marker)
    with pytest.raises(CheckpointError, match=r"thing file '.*gone\.pt' does not exist"):
        read_weights_file(tmp_path / "gone.pt", "thing", "do this")
    with pytest.raises(CheckpointError, match=r"refusing to load '.*x\.pkl' \(thing\)"):
        read_weights_file(tmp_path / "x.pkl", "thing", "do this")


def test_backbone_pretrained_pickle_is_refused_without_unsafe_advice(tmp_path) -> None:
    from chimeraseg.modeling.backbone import CheckpointError as BackboneCheckpointError
    from chimeraseg.modeling.backbone.checkpoint import read_state_dict

    marker, path = tmp_path / "planted", tmp_path / "mit_b0.pth"
    torch.save({"state_dict": {"patch_embed1.proj.weight": _Planter(marker)}}, path)
    with pytest.raises(BackboneCheckpointError, match="backbone checkpoint") as info:
        read_state_dict(path)
    _assert_refused_safely(info.value, path, marker)


def test_clip_checkpoint_pickle_is_refused_without_unsafe_advice(tmp_path) -> None:
    import json

    from chimeraseg_test_utils import TINY_CLIP_CONFIG

    from chimeraseg.clip.loading import load_clip

    config = tmp_path / "chimeraseg_tiny_weights_reads.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    marker, path = tmp_path / "planted", tmp_path / "clip.pt"
    torch.save({"logit_scale": _Planter(marker)}, path)
    with pytest.raises(RuntimeError, match="CLIP checkpoint") as info:
        load_clip(str(config), str(path))
    _assert_refused_safely(info.value, path, marker)


def test_text_cache_pickle_is_refused_without_unsafe_advice(tiny_clip, tmp_path) -> None:
    from chimeraseg.clip.text import encode_class_names

    encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)
    (path,) = tmp_path.glob("text_*.pt")
    marker = tmp_path / "planted"
    torch.save({"embeddings": _Planter(marker), "names": ["cat"]}, path)
    with pytest.raises(RuntimeError, match=r"text-embedding cache.*delete '.*' to rebuild") as info:
        encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)
    _assert_refused_safely(info.value, path, marker)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask_not_the_temporary_file(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        assert umask_file_mode() == 0o666 & ~umask
        atomic_torch_save({"w": torch.ones(2)}, tmp_path / "model.pth")
        atomic_write_text(tmp_path / "last_checkpoint", "model.pth")
        with open(tmp_path / "plain.txt", "w") as f:  # what the user expects
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("model.pth", "last_checkpoint"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
