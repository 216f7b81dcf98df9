"""CLIP TorchScript archives are read as data: no torch.jit.load, crafted pickles refused."""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from chimeraseg_test_utils import TINY_CLIP_CONFIG, build_tiny_clip
from torch import nn

from chimeraseg.clip.loading import load_clip
from chimeraseg.clip.torchscript_archive import (
    TorchScriptArchiveError,
    read_torchscript_state_dict,
)

TINY = "chimeraseg-test-tiny-hardening"


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("configs")
    (root / f"{TINY}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(root)
    return TINY


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("mask", torch.ones(2, 2))
        self.register_buffer("transient", torch.zeros(1), persistent=False)
        self.scale = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * self.scale


class _Outer(nn.Module):
    """Parameters, buffers, submodules, a Sequential, fp16, a non-contiguous plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _Inner()
        self.proj = nn.Parameter(torch.randn(2, 4))
        self.seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.LayerNorm(2))
        self.half_weight = nn.Parameter(torch.randn(3).half())
        self.register_buffer("context_length", torch.tensor(77))
        self.plain = torch.arange(4.0).view(2, 2).t()  # an attribute, not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.inner(x)) @ self.proj


def _script_save(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(path))


def _jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).state_dict()


def test_state_dict_equals_torch_jit_load(tmp_path) -> None:
    path = tmp_path / "module.pt"
    _script_save(_Outer(), path)
    ours, reference = read_torchscript_state_dict(path), _jit_state_dict(path)
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_load_clip_reads_torchscript_archives_without_torch_jit_load(
    tiny_name, tmp_path, monkeypatch
) -> None:
    source = build_tiny_clip(seed=7)
    path = tmp_path / "tiny_openai_jit.pt"
    _script_save(source, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.jit.load must not parse user-supplied CLIP files")

    monkeypatch.setattr(torch.jit, "load", forbidden)
    model = load_clip(tiny_name, str(path))
    expected = source.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


class _Planter:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Shell:
    """Unpickling this calls ``os.system("touch marker")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_archive(tmp_path: Path, payload: object) -> Path:
    """A genuine TorchScript archive whose data.pkl is replaced by ``payload``'s pickle."""
    genuine, crafted = tmp_path / "genuine.pt", tmp_path / "ViT-B-16.pt"
    _script_save(_Outer(), genuine)
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(crafted, "w") as out:
        for name in src.namelist():
            data = pickle.dumps(payload, protocol=2) if name.endswith("/data.pkl") else None
            out.writestr(name, data if data is not None else src.read(name))
    return crafted


@pytest.mark.parametrize("payload_type", [_Planter, _Shell])
def test_crafted_archive_is_refused_without_executing(tiny_name, tmp_path, payload_type) -> None:
    marker = tmp_path / "planted"
    path = _crafted_archive(tmp_path, payload_type(marker))
    with pytest.raises(TorchScriptArchiveError, match=r"ViT-B-16\.pt.*refused"):
        read_torchscript_state_dict(path)
    with pytest.raises(RuntimeError, match=r"CLIP checkpoint '.*ViT-B-16\.pt'.*refused"):
        load_clip(tiny_name, str(path))
    assert not marker.exists()


def test_storage_outside_the_archive_is_refused(tmp_path) -> None:
    path = tmp_path / "module.pt"
    _script_save(_Outer(), path)
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as out:
        for name in src.namelist():
            if not name.endswith("/data/0"):
                out.writestr(name, src.read(name))
    with pytest.raises(TorchScriptArchiveError, match=r"broken\.pt.*data/0"):
        read_torchscript_state_dict(broken)


def test_unreadable_clip_file_error_gives_no_unsafe_advice(tiny_name, tmp_path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(13).bytes(512))  # the same bytes every run
    with pytest.raises(RuntimeError, match=r"random\.pt") as info:
        load_clip(tiny_name, str(path))
    assert "weights_only=False" not in str(info.value)
    assert "weights_only` set to `False" not in str(info.value)
