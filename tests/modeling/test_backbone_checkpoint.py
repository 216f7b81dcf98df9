"""MiT/ViT weight loading: official-format round trip, wrappers, and clear errors."""

from __future__ import annotations

import pytest
import torch

from chimeraseg.modeling.backbone import (
    CheckpointError,
    build_mit,
    infer_mit_variant,
    load_mit_checkpoint,
)


def _official_format(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The key mapping of `mit_b*.pth`: our state dict unchanged plus the ImageNet classifier."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    width = model.config.embed_dims[-1]
    state["head.weight"] = torch.randn(1000, width)
    state["head.bias"] = torch.randn(1000)
    return state


@pytest.fixture(scope="module")
def b0_source() -> torch.nn.Module:
    torch.manual_seed(123)
    return build_mit("b0")


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sb = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, sb[key]), key


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "module."])
def test_official_format_round_trips_strictly(tmp_path, b0_source, wrapper):
    state = _official_format(b0_source)
    if wrapper == "module.":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = state if wrapper is None else {wrapper: state, "meta": {"epoch": 1}}
    path = tmp_path / "mit_b0.pth"
    torch.save(obj, path)
    target = build_mit("b0")
    assert not torch.equal(target.block1[0].attn.q.weight, b0_source.block1[0].attn.q.weight)
    dropped = load_mit_checkpoint(target, path)
    assert dropped == ["head.weight", "head.bias"]
    _assert_same_weights(target, b0_source)


def test_checkpoint_without_head_also_loads(tmp_path, b0_source):
    path = tmp_path / "b0_nohead.pth"
    torch.save(b0_source.state_dict(), path)
    assert load_mit_checkpoint(build_mit("b0"), path) == []


def test_wrong_variant_names_the_variant_the_file_looks_like(tmp_path):
    path = tmp_path / "mit_b1.pth"
    torch.save(_official_format(build_mit("b1")), path)
    with pytest.raises(CheckpointError, match=r"looks like mit_b1.*model is mit_b0") as info:
        load_mit_checkpoint(build_mit("b0"), path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "b4", "b5"])
def test_infer_variant_from_shapes_and_depths(variant):
    with torch.device("meta"):
        state = build_mit(variant).state_dict()
    assert infer_mit_variant(state) == variant


def test_renamed_key_is_reported_as_missing_and_unexpected(tmp_path, b0_source):
    state = _official_format(b0_source)
    state["block2.1.attn.query.weight"] = state.pop("block2.1.attn.q.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_mit_checkpoint(build_mit("b0"), path)
    message = str(info.value)
    assert "missing keys [block2.1.attn.q.weight]" in message
    assert "unexpected keys [block2.1.attn.query.weight]" in message
    assert str(path) in message


def test_extra_head_like_key_is_not_silently_dropped(tmp_path, b0_source):
    state = _official_format(b0_source)
    state["head.extra"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \[head.extra\]"):
        load_mit_checkpoint(build_mit("b0"), path)


def test_shape_mismatch_names_the_key(tmp_path, b0_source):
    state = _official_format(b0_source)
    state["block3.0.mlp.fc1.bias"] = torch.zeros(7)
    path = tmp_path / "shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"block3.0.mlp.fc1.bias: file \(7,\)"):
        load_mit_checkpoint(build_mit("b0"), path)


def test_depth_matching_no_variant_is_reported(tmp_path, b0_source):
    state = {k: v for k, v in _official_format(b0_source).items() if not k.startswith("block1.1.")}
    path = tmp_path / "shallow.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"depths \[1, 2, 2, 2\].*matches no MiT variant"):
        load_mit_checkpoint(build_mit("b0"), path)


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_mit_checkpoint(build_mit("b0"), missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_mit_checkpoint(build_mit("b0"), garbage)
    non_tensor = tmp_path / "strings.pth"
    torch.save({"patch_embed1.proj.weight": "x"}, non_tensor)
    with pytest.raises(CheckpointError, match=r"non-tensor entries patch_embed1.proj.weight"):
        load_mit_checkpoint(build_mit("b0"), non_tensor)
