"""Loading CLIP offline: local checkpoints, clear errors, QuickGELU handling, references."""

from __future__ import annotations

import json
import warnings

import open_clip
import pytest
import torch
from chimeraseg_test_utils import TINY_CLIP_CONFIG, build_tiny_clip
from safetensors.torch import save_file

from chimeraseg.clip.loading import (
    _resolve_activation,
    clip_reference,
    file_sha256,
    load_clip,
    verify_clip_reference,
)

TINY = "chimeraseg-test-tiny"  # QuickGELU, like TINY_CLIP_CONFIG
TINY_GELU = "chimeraseg-test-tinygelu"  # same shapes, GELU; its "-quickgelu" twin is TINY_GELU_Q


@pytest.fixture(scope="module")
def tiny_names(tmp_path_factory) -> None:
    """Registers the tiny config under open_clip names so ``load_clip`` can build it."""
    root = tmp_path_factory.mktemp("configs")
    gelu = {**TINY_CLIP_CONFIG, "quick_gelu": False}
    for name, cfg in [(TINY, TINY_CLIP_CONFIG), (TINY_GELU, gelu),
                      (f"{TINY_GELU}-quickgelu", TINY_CLIP_CONFIG)]:  # fmt: skip
        (root / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_missing_checkpoint_names_path(tiny_names, tmp_path):
    path = tmp_path / "nope" / "ViT-B-16.pt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        load_clip(TINY, str(path))


def test_corrupt_checkpoint_names_path(tiny_names, tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(RuntimeError, match=f"'{path}' is not a CLIP checkpoint"):
        load_clip(TINY, str(path))
    bad_st = tmp_path / "corrupt.safetensors"
    bad_st.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="corrupt.safetensors"):
        load_clip(TINY, str(bad_st))


def test_non_state_dict_checkpoint(tiny_names, tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(RuntimeError, match="does not hold a state dict"):
        load_clip(TINY, str(path))


def test_mismatched_checkpoint_names_model(tiny_names, tmp_path):
    state = build_tiny_clip().state_dict()
    state.pop("visual.proj")
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=f"'{path}' does not match open_clip model '{TINY}'"):
        load_clip(TINY, str(path))


def test_random_init_requires_flag(tiny_names):
    with pytest.raises(ValueError, match="allow_random_init=True"):
        load_clip(TINY, pretrained=None)


def test_random_init_with_flag_warns_is_frozen_and_reproducible(tiny_names):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        a = load_clip(TINY, pretrained=None, allow_random_init=True)
    with pytest.warns(UserWarning):
        b = load_clip(TINY, pretrained=None, allow_random_init=True)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    _assert_same_weights(a, b)
    ref = clip_reference(a)
    assert ref["random_init"] is True and ref["pretrained"] is None and ref["name"] == TINY


def test_unknown_names_and_tags(tiny_names):
    with pytest.raises(ValueError, match="unknown open_clip model name 'No-Such-Model'"):
        load_clip("No-Such-Model", pretrained=None, allow_random_init=True)
    with pytest.raises(ValueError, match="'laion999' is neither an existing checkpoint file"):
        load_clip("ViT-B-16-quickgelu", pretrained="laion999")


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".safetensors"])
def test_local_state_dict_files_load_exactly(tiny_names, tmp_path, suffix):
    source = build_tiny_clip(seed=3)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    model = load_clip(TINY, str(path))
    _assert_same_weights(model, source)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    ref = clip_reference(model)
    assert ref == {"name": TINY, "pretrained": str(path.resolve()), "sha256": file_sha256(path),
                   "random_init": False, "random_init_seed": None}  # fmt: skip


def test_openai_torchscript_archive_switches_to_quickgelu(tiny_names, tmp_path):
    """OpenAI's JIT archives are OpenAI weights: a GELU model name is switched, with a warning."""
    source = build_tiny_clip(seed=5)
    path = tmp_path / "tiny_jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(source).save(str(path))
    with pytest.warns(UserWarning, match=f"using '{TINY_GELU}-quickgelu'"):
        model = load_clip(TINY_GELU, str(path))
    _assert_same_weights(model, source)
    assert clip_reference(model)["name"] == f"{TINY_GELU}-quickgelu"
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model.encode_image(images), source.encode_image(images))


def test_quickgelu_resolution_for_openai_tag():
    with pytest.warns(UserWarning, match="'ViT-B-16-quickgelu'"):
        assert _resolve_activation("ViT-B-16", True, "tag 'openai'") == (
            "ViT-B-16-quickgelu",
            False,
        )
    assert _resolve_activation("ViT-B-16-quickgelu", True, "tag") == ("ViT-B-16-quickgelu", False)
    with pytest.warns(UserWarning):
        assert _resolve_activation("ViT-B-16-quickgelu", False, "t") == ("ViT-B-16", False)


def test_verify_clip_reference(tiny_names, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build_tiny_clip().state_dict(), path)
    model = load_clip(TINY, str(path))
    verify_clip_reference(model, clip_reference(model))
    stale = {**clip_reference(model), "sha256": "0" * 64}
    with pytest.raises(ValueError, match="ckpt.pth.*sha256: checkpoint='0000"):
        verify_clip_reference(model, stale, source="ckpt.pth")


def test_reference_of_foreign_model_is_unknown(tiny_clip):
    assert clip_reference(tiny_clip) == dict.fromkeys(
        ("name", "pretrained", "sha256", "random_init", "random_init_seed")
    )
