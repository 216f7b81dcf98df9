"""Text embeddings: ensembling, synonyms, humaniser, on-disk cache and the cache-building tool."""

from __future__ import annotations

import hashlib
import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from chimeraseg_test_utils import TINY_CLIP_CONFIG, load_script

import chimeraseg.clip.text as text_module
from chimeraseg.clip.loading import clip_reference
from chimeraseg.clip.names import humanize_class_name, split_synonyms
from chimeraseg.clip.templates import TEMPLATE_SETS, resolve_templates
from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.class_tables import (
    ADE20K_150_CLASSES,
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_VOC_20_CLASSES,
    SYNTHETIC_CLASSES,
    ade20k_847_table,
    pascal_context_459_classes,
)
from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES
from chimeraseg.data.splits import get_split


def _prompt_embedding(clip, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(clip.encode_text(open_clip.tokenize(prompts)), dim=-1)


def test_rows_are_unit_norm_and_match_recipe(tiny_clip):
    templates = ["a photo of a {}.", "a drawing of the {}."]
    emb = encode_class_names(tiny_clip, ["cat", "wall-concrete"], templates=templates)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    prompts = [t.format("concrete wall") for t in templates]
    expected = F.normalize(_prompt_embedding(tiny_clip, prompts).mean(0), dim=-1)
    torch.testing.assert_close(emb[1], expected, rtol=1e-5, atol=1e-6)


def test_template_order_does_not_matter(tiny_clip):
    templates = list(TEMPLATE_SETS["zegclip15"])
    a = encode_class_names(tiny_clip, ["dog", "sky-other"], templates=templates)
    b = encode_class_names(tiny_clip, ["dog", "sky-other"], templates=templates[::-1])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    c = encode_class_names(tiny_clip, ["dog", "sky-other"], templates="single")
    assert not torch.allclose(a, c, atol=1e-3)


def test_synonyms_are_averaged(tiny_clip):
    emb = encode_class_names(tiny_clip, ["person, people"], templates="single")[0]
    one = encode_class_names(tiny_clip, ["person", "people"], templates="single")
    torch.testing.assert_close(emb, F.normalize(one.mean(0), dim=-1), rtol=1e-5, atol=1e-6)


def test_humaniser():
    assert humanize_class_name("wall-concrete") == "concrete wall"
    assert humanize_class_name("building-other") == "building"
    assert humanize_class_name("desk-stuff") == "desk"
    assert humanize_class_name("playingfield") == "playing field"
    assert humanize_class_name("tvmonitor") == "tv monitor"
    assert humanize_class_name("sky-other, blue_sky") == "sky, blue_sky"  # a user's word: verbatim
    for words in ("post-it", "hot-air balloon", "horse-drawn carriage", "jersey, t-shirt"):
        assert humanize_class_name(words) == words
    with pytest.raises(ValueError, match="'cat,,dog'"):
        humanize_class_name("cat,,dog")


PASCAL_TABLES = ("pascal_context_59", "pascal_context_459", "voc_20")


def _reference_coco_stuff_spelling(name: str) -> str:
    """COCO-Stuff's rule as it was applied to every vocabulary, written out independently."""
    joined = {"playingfield": "playing field", "waterdrops": "water drops"}
    fixed = {"window-blind": "window blind", "ceiling-tile": "ceiling tile"}
    fixed |= {"structural-other": "structure", "solid-other": "solid"}
    if name in joined or name in fixed:
        return {**joined, **fixed}[name]
    words = name.split("-")
    if len(words) == 1:
        return name
    if words[-1] in ("other", "stuff"):
        return "-".join(words[:-1])
    return f"{words[-1]} {'-'.join(words[:-1])}"


def test_only_declared_names_change_in_the_shipped_lists():
    """Every shipped list: COCO-Stuff's names as before, PASCAL's joined words split, and no
    other synonym changes (ADE20K-847 had 11 garbled names and PASCAL Context-459 two)."""
    tables = {
        "coco_stuff_171": COCO_STUFF_171_CLASSES,
        "ade20k_150": ADE20K_150_CLASSES,
        "ade20k_847": tuple(name for _, name in ade20k_847_table()),
        "pascal_context_59": PASCAL_CONTEXT_59_CLASSES,
        "pascal_context_459": pascal_context_459_classes(),
        "voc_20": PASCAL_VOC_20_CLASSES,
        "synthetic": SYNTHETIC_CLASSES,
    }
    pascal = {"tvmonitor": "tv monitor", "pottedplant": "potted plant"}
    pascal["diningtable"] = "dining table"
    changed = {}
    for table, names in tables.items():
        for name in names:
            before, after = split_synonyms(name), split_synonyms(humanize_class_name(name))
            assert len(before) == len(after), name
            for raw, spelled in zip(before, after):
                if table == "coco_stuff_171":
                    assert spelled == _reference_coco_stuff_spelling(raw), raw
                elif raw in pascal and table in PASCAL_TABLES:
                    assert spelled == pascal[raw], raw
                else:
                    assert spelled == raw, (table, raw)
                if spelled != raw:
                    changed.setdefault(table, set()).add(raw)
    assert len(changed["coco_stuff_171"]) == 31 and "ade20k_847" not in changed
    assert changed["voc_20"] == set(pascal) and changed["pascal_context_459"] == set(pascal) - {
        "diningtable"
    }
    hyphenated = [n for n in tables["ade20k_847"] if "-" in n]
    assert len(hyphenated) >= 11  # the list really holds the hyphenated names that were garbled


def test_cache_entry_of_the_old_spelling_is_not_reused(tiny_clip, tmp_path):
    """A cache file under the key of the old format (no ``prompt_names``) is never read."""
    names = ["post-it", "wall-concrete"]
    templates = resolve_templates("single")
    old_payload = {
        "version": text_module.CACHE_FORMAT_VERSION,
        "model": clip_reference(tiny_clip).get("name") or type(tiny_clip).__name__,
        "weights": text_module.weights_identifier(tiny_clip),
        "templates": templates,
        "names": names,
        "humanize": True,
    }
    blob = json.dumps(old_payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    old_path = tmp_path / f"text_{hashlib.sha256(blob.encode('utf-8')).hexdigest()}.pt"
    stale = torch.zeros(2, 32)
    torch.save({"embeddings": stale, "names": names, "templates": templates}, old_path)
    emb = encode_class_names(tiny_clip, names, templates="single", cache_dir=tmp_path)
    assert not torch.equal(emb, stale) and len(list(tmp_path.glob("text_*.pt"))) == 2
    verbatim = F.normalize(_prompt_embedding(tiny_clip, ["a photo of a post-it."])[0], dim=-1)
    torch.testing.assert_close(emb[0], verbatim, rtol=1e-5, atol=1e-6)


def test_template_sets_and_validation():
    assert len(resolve_templates("imagenet80+scene")) == 85
    assert len(set(resolve_templates("imagenet80+scene"))) == 85
    assert len(resolve_templates("zegclip15")) == 15
    assert resolve_templates("single") == ["a photo of a {}."]
    with pytest.raises(ValueError, match="unknown template set 'imagenet81'"):
        resolve_templates("imagenet81")
    with pytest.raises(ValueError, match="'a photo'"):
        resolve_templates(["a photo"])


def test_cache_hit_is_identical_and_skips_encoder(tiny_clip, tmp_path, monkeypatch):
    names = ["cat", "wall-concrete"]
    first = encode_class_names(tiny_clip, names, templates="zegclip15", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("text encoder ran on a cache hit")

    monkeypatch.setattr(text_module, "_encode_prompts", fail)
    second = encode_class_names(tiny_clip, names, templates="zegclip15", cache_dir=tmp_path)
    assert torch.equal(first, second)
    with pytest.raises(AssertionError, match="cache hit"):  # changed templates: a miss
        encode_class_names(tiny_clip, names, templates="single", cache_dir=tmp_path)


def test_changed_template_list_misses_cache(tiny_clip, tmp_path):
    names = ["cat"]
    encode_class_names(tiny_clip, names, templates=["a photo of a {}."], cache_dir=tmp_path)
    encode_class_names(tiny_clip, names, templates=["a photo of the {}."], cache_dir=tmp_path)
    encode_class_names(tiny_clip, ["dog"], templates=["a photo of the {}."], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_*.pt"))) == 3


def test_different_weights_miss_cache(tiny_clip, tmp_path):
    from chimeraseg_test_utils import build_tiny_clip

    a = encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)
    b = encode_class_names(build_tiny_clip(seed=1), ["cat"], templates="single", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_*.pt"))) == 2 and not torch.allclose(a, b)


def test_corrupt_cache_file_is_reported(tiny_clip, tmp_path):
    encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)
    (path,) = tmp_path.glob("text_*.pt")
    path.write_bytes(b"junk")
    with pytest.raises(RuntimeError, match=f"'{path}' is not a text-embedding cache"):
        encode_class_names(tiny_clip, ["cat"], templates="single", cache_dir=tmp_path)


def test_build_text_embeddings_tool(tmp_path, capsys):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "chimeraseg-tool-tiny.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_dir)
    names_file = tmp_path / "names.txt"
    names_file.write_text("# vocabulary\ncat\nwall-concrete\n\nperson, people\n")
    tool = load_script("tools/build_text_embeddings.py")
    common = [
        "--clip-name",
        "chimeraseg-tool-tiny",
        "--allow-random-clip",
        "--templates",
        "single",
    ]
    args = ["--vocabulary-file", str(names_file), *common, "--cache-dir", str(tmp_path / "c")]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert tool.main(args) == 0
    assert "single: (3, 32)" in capsys.readouterr().out
    (cached,) = (tmp_path / "c").glob("text_*.pt")
    payload = torch.load(cached, weights_only=True)
    assert payload["names"] == ["cat", "wall-concrete", "person, people"]
    split_args = ["--split", "synthetic", *common, "--cache-dir", str(tmp_path / "s")]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert tool.main(split_args) == 0
    (cached,) = (tmp_path / "s").glob("text_*.pt")
    split = get_split("synthetic")
    assert torch.load(cached, weights_only=True)["names"] == list(split.class_names)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        tool.main(
            ["--vocabulary-file", str(tmp_path / "missing.txt"), "--cache-dir", str(tmp_path)]
        )


def test_build_text_embeddings_tool_writes_the_user_cache_by_default(tmp_path, monkeypatch, capsys):
    """Without --cache-dir the tool fills the folder configs with TEXT_CACHE_DIR user-cache read."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "chimeraseg-tool-tiny.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_dir)
    monkeypatch.setenv("CHIMERASEG_CACHE", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    tool = load_script("tools/build_text_embeddings.py")
    args = ["--split", "synthetic", "--clip-name", "chimeraseg-tool-tiny", "--allow-random-clip"]
    with pytest.warns(UserWarning, match="RANDOM"):
        assert tool.main([*args, "--templates", "single"]) == 0
    (cached,) = (tmp_path / "user" / "text_embeddings").glob("text_*.pt")
    assert str(cached.parent) in capsys.readouterr().out
    assert not (tmp_path / "output").exists()
