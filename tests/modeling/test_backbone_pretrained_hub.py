"""ImageNet weights by name: hub-layout folders, a pre-filled hub cache, and the offline line.

The MiT files are written as the ``nvidia/mit-b*`` hub repos hold them: a plain state dict of
transformers-4 ``SegformerForImageClassification`` (``segformer.encoder.*`` + ``classifier.*``),
made from a random MiT-B0 by a renaming written here, independently of the loader's.
No test touches the network: every hub test runs with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from chimeraseg.modeling.backbone import (
    PretrainedNotFoundError,
    build_mit,
    build_student_backbone,
    build_vit_b16,
    load_mit_checkpoint,
    load_vit_checkpoint,
)

MIT_REPO = "nvidia/mit-b0"
VIT_REPO = "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _to_transformers4(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our MiT state dict in the key names of the hub's ``pytorch_model.bin`` (+ classifier)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = key
        for stage in range(1, 5):
            name = name.replace(f"patch_embed{stage}.norm.", f"patch_embeddings.{stage - 1}.ln.")
            name = name.replace(f"patch_embed{stage}.", f"patch_embeddings.{stage - 1}.")
            name = name.replace(f"block{stage}.", f"block.{stage - 1}.")
            if name.startswith(f"norm{stage}."):
                name = name.replace(f"norm{stage}.", f"layer_norm.{stage - 1}.", 1)
        name = name.replace(".ln.", ".layer_norm.")
        name = name.replace(".norm1.", ".layer_norm_1.").replace(".norm2.", ".layer_norm_2.")
        name = name.replace(".attn.q.", ".attention.self.query.")
        name = name.replace(".attn.sr.", ".attention.self.sr.")
        name = name.replace(".attn.norm.", ".attention.self.layer_norm.")
        name = name.replace(".attn.proj.", ".attention.output.dense.")
        name = name.replace(".mlp.fc1.", ".mlp.dense1.").replace(".mlp.fc2.", ".mlp.dense2.")
        name = "segformer.encoder." + name
        if ".attn.kv." in name:
            width = value.shape[0] // 2
            out[name.replace(".attn.kv.", ".attention.self.key.")] = value[:width].clone()
            out[name.replace(".attn.kv.", ".attention.self.value.")] = value[width:].clone()
        else:
            out[name] = value.clone()
    out["classifier.weight"] = torch.randn(1000, model.config.embed_dims[-1])
    out["classifier.bias"] = torch.randn(1000)
    return out


def _fill_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Writes ``models--owner--name/{refs/main, snapshots/<sha>/...}`` as huggingface_hub does."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def _torch_bytes(obj: object, tmp_path: Path) -> bytes:
    path = tmp_path / "tmp.bin"
    torch.save(obj, path)
    return path.read_bytes()


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture(scope="module")
def mit_source() -> torch.nn.Module:
    torch.manual_seed(7)
    return build_mit("b0")


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    other = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, other[key]), key


def test_transformers_layout_has_the_hub_key_names(mit_source):
    keys = set(_to_transformers4(mit_source))
    assert "segformer.encoder.patch_embeddings.0.proj.weight" in keys
    assert "segformer.encoder.patch_embeddings.3.layer_norm.bias" in keys
    assert "segformer.encoder.block.0.1.attention.self.key.weight" in keys
    assert "segformer.encoder.block.2.0.attention.self.sr.weight" in keys
    assert "segformer.encoder.block.1.0.mlp.dwconv.dwconv.weight" in keys
    assert "segformer.encoder.layer_norm.3.weight" in keys
    assert not any(".kv." in k or "attn" in k for k in keys)


def test_hub_cache_mit_id_loads_the_source_weights(offline_cache, mit_source, tmp_path):
    config = json.dumps({"model_type": "segformer", "hidden_sizes": [32, 64, 160, 256]})
    weights = _torch_bytes(_to_transformers4(mit_source), tmp_path)
    _fill_hub_cache(
        offline_cache, MIT_REPO, {"config.json": config.encode(), "pytorch_model.bin": weights}
    )
    target = build_mit("b0")
    assert not torch.equal(target.block1[0].attn.kv.weight, mit_source.block1[0].attn.kv.weight)
    assert load_mit_checkpoint(target, MIT_REPO) == ["head.weight", "head.bias"]
    _assert_same(target, mit_source)


def test_local_hub_layout_folder_loads_and_names_its_file(mit_source, tmp_path):
    folder = tmp_path / "mit-b0"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    torch.save(_to_transformers4(mit_source), folder / "pytorch_model.bin")
    model = build_student_backbone("mit_b0", 0.0, weights=str(folder))
    _assert_same(model, mit_source)
    with pytest.raises(ValueError, match=r"looks like mit_b0.*model is mit_b1") as info:
        build_student_backbone("mit_b1", 0.0, weights=str(folder))
    assert str(folder / "pytorch_model.bin") in str(info.value)


def test_hub_cache_timm_vit_safetensors_loads(offline_cache, tmp_path):
    torch.manual_seed(3)
    source = build_vit_b16()
    state = {k: v.clone().contiguous() for k, v in source.vit.state_dict().items()}
    state["head.weight"], state["head.bias"] = torch.randn(1000, 768), torch.randn(1000)
    save_file(state, tmp_path / "model.safetensors")
    config = json.dumps({"architecture": "vit_base_patch16_224", "num_classes": 1000})
    _fill_hub_cache(
        offline_cache,
        VIT_REPO,
        {
            "config.json": config.encode(),
            "model.safetensors": (tmp_path / "model.safetensors").read_bytes(),
        },
    )
    target = build_vit_b16()
    assert load_vit_checkpoint(target, VIT_REPO) == ["head.weight", "head.bias"]
    _assert_same(target.vit, source.vit)


def test_uncached_offline_hub_id_gives_one_line(offline_cache):
    with pytest.raises(PretrainedNotFoundError) as info:
        load_mit_checkpoint(build_mit("b0"), "nvidia/mit-b4")
    message = str(info.value)
    assert "\n" not in message
    assert "nvidia/mit-b4" in message and str(offline_cache) in message
    assert "hf download nvidia/mit-b4 --local-dir pretrained/mit-b4" in message
    assert "a local file or folder" in message


def test_missing_file_and_empty_folder_are_named(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"Checkpoint file not found: pretrained/mit_b4.pth"
    ):
        load_mit_checkpoint(build_mit("b0"), "pretrained/mit_b4.pth")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PretrainedNotFoundError, match=r"empty holds no ImageNet weights"):
        load_mit_checkpoint(build_mit("b0"), empty)


def test_lone_key_without_value_is_reported(mit_source, tmp_path):
    state = _to_transformers4(mit_source)
    del state["segformer.encoder.block.0.0.attention.self.value.weight"]
    torch.save(state, tmp_path / "partial.bin")
    with pytest.raises(ValueError, match=r"block1\.0\.attn\.key\.weight") as info:
        load_mit_checkpoint(build_mit("b0"), tmp_path / "partial.bin")
    assert "missing keys [block1.0.attn.kv.weight]" in str(info.value)


@pytest.fixture()
def online_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache with the hub "online": hf_hub_download is replaced in each test."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return cache


def test_download_takes_the_bin_when_the_repo_has_no_safetensors(
    online_cache, mit_source, tmp_path, monkeypatch
):
    from huggingface_hub.errors import EntryNotFoundError

    weights = tmp_path / "downloaded.bin"
    torch.save(_to_transformers4(mit_source), weights)
    asked: list[tuple[str, str]] = []

    def download(repo_id, filename, cache_dir=None):
        asked.append((repo_id, filename))
        assert cache_dir == str(online_cache)
        if filename == "model.safetensors":
            raise EntryNotFoundError(f"{repo_id} has no {filename}")
        return str(weights)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    target = build_mit("b0")
    load_mit_checkpoint(target, MIT_REPO)
    _assert_same(target, mit_source)
    assert asked == [(MIT_REPO, "model.safetensors"), (MIT_REPO, "pytorch_model.bin")]


def test_unreachable_hub_gives_one_line(online_cache, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def no_connection(repo_id, filename, cache_dir=None):
        raise LocalEntryNotFoundError("connection error and not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_connection)
    with pytest.raises(PretrainedNotFoundError) as info:
        load_mit_checkpoint(build_mit("b0"), MIT_REPO)
    message = str(info.value)
    assert "\n" not in message and "cannot be reached" in message
    assert str(online_cache) in message and f"hf download {MIT_REPO}" in message
