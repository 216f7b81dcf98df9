"""Text-embedding caches: a cache of another width or type names the file and the fix; large
vocabularies are encoded in batches of prompts with progress output."""

from __future__ import annotations

import pytest
import torch

import chimeraseg.clip.text as text_module
from chimeraseg.clip.text import LARGE_VOCABULARY, encode_class_names


def _cache_file(tiny_clip, tmp_path, names):
    encode_class_names(tiny_clip, names, templates="single", cache_dir=tmp_path)
    (path,) = tmp_path.glob("text_*.pt")
    return path


@pytest.mark.parametrize(
    ("embeddings", "message"),
    [
        (torch.zeros(2, 48), r"width 48, but this CLIP's text embeddings have width 32"),
        ([[0.0] * 32, [0.0] * 32], r"holds no \(N, D\) embedding tensor \(found list\)"),
        (torch.zeros(3, 32), r"3 rows for 2 names"),
    ],
)
def test_mismatched_cache_names_the_file_and_the_fix(tiny_clip, tmp_path, embeddings, message):
    names = ["cat", "dog"]
    path = _cache_file(tiny_clip, tmp_path, names)
    torch.save({"embeddings": embeddings, "names": names, "templates": ["{}"]}, path)
    with pytest.raises(RuntimeError, match=message) as info:
        encode_class_names(tiny_clip, names, templates="single", cache_dir=tmp_path)
    assert f"'{path}'" in str(info.value) and f"delete '{path}' to rebuild it" in str(info.value)


def test_cache_holding_no_dict_is_named(tiny_clip, tmp_path):
    path = _cache_file(tiny_clip, tmp_path, ["cat"])
    torch.save(torch.zeros(1, 32), path)
    with pytest.raises(RuntimeError, match=r"found Tensor\); delete"):
        encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)


def test_read_only_cache_still_serves_and_a_miss_only_warns(tiny_clip, tmp_path, monkeypatch):
    first = encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)

    def read_only(obj, path):  # what a read-only folder does, also for root
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(text_module, "atomic_torch_save", read_only)
    again = encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="text-embedding cache .* not written"):
        other = encode_class_names(tiny_clip, ["dog"], templates="single", cache_dir=tmp_path)
    assert torch.equal(first, again) and other.shape == (1, 32)
    assert len(list(tmp_path.glob("text_*.pt"))) == 1


def test_large_vocabulary_is_batched_with_progress(tiny_clip, monkeypatch, capsys):
    names = [f"thing{i}" for i in range(LARGE_VOCABULARY)] + ["cat, kitty"]
    calls = []
    encode = tiny_clip.encode_text

    def counting(tokens):
        calls.append(tokens.shape[0])
        return encode(tokens)

    monkeypatch.setattr(tiny_clip, "encode_text", counting)
    templates = ["a photo of a {}.", "a {}."]
    embeddings = encode_class_names(tiny_clip, names, templates=templates, batch_size=256)
    prompts = 2 * (len(names) + 1)  # the last class has two synonyms
    assert sum(calls) == prompts and len(calls) == -(-prompts // 256)
    assert "text embeddings" in capsys.readouterr().err
    calls.clear()
    for index in (0, 317, len(names) - 1):  # the same rows as one class at a time
        alone = encode_class_names(tiny_clip, [names[index]], templates=templates)
        torch.testing.assert_close(embeddings[index], alone[0], rtol=1e-5, atol=1e-6)
    assert "text embeddings" not in capsys.readouterr().err  # small vocabularies stay quiet
    assert text_module.LARGE_VOCABULARY == LARGE_VOCABULARY
