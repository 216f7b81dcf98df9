"""Vocabulary embeddings are encoded once, by rank 0 on the model's device, and shared."""

from __future__ import annotations

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, build_tiny_clip

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from chimeraseg.d2 import text_embeddings  # noqa: E402
from chimeraseg.d2.text_embeddings import encode_vocabulary_once  # noqa: E402

pytestmark = pytest.mark.detectron2

NAMES = ["cat", "wall-concrete", "sky-other"]


def _two_ranks(monkeypatch, rank: int, rank0_sends=None) -> list:
    """Pretends to be ``rank`` of 2; the gather returns rank 0's entry (this rank's own on 0)."""
    sent = []
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "is_main_process", lambda: rank == 0)

    def all_gather(data):
        sent.append(data)
        return [data if rank == 0 else rank0_sends, None if rank == 0 else data]

    monkeypatch.setattr(comm, "all_gather", all_gather)
    return sent


def _counting_encoder(monkeypatch) -> list:
    calls = []
    real = text_embeddings.encode_class_names

    def encode(*args, **kwargs):
        calls.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(text_embeddings, "encode_class_names", encode)
    return calls


def test_one_process_encodes_on_the_model_device(monkeypatch) -> None:
    clip = build_tiny_clip()
    calls = _counting_encoder(monkeypatch)
    embeddings = encode_vocabulary_once(clip, NAMES, "single", None, "meta")
    assert embeddings.device.type == "meta" and embeddings.shape == (3, 32)
    assert calls == ["meta"]
    assert {p.device.type for n, p in clip.named_parameters() if n.startswith("visual.")} == {"cpu"}


def test_rank0_encodes_and_sends_its_embeddings(monkeypatch) -> None:
    clip = build_tiny_clip()
    expected = text_embeddings.encode_class_names(clip, NAMES, "single")
    calls = _counting_encoder(monkeypatch)
    sent = _two_ranks(monkeypatch, rank=0)
    embeddings = encode_vocabulary_once(clip, NAMES, "single", None, "cpu")
    assert calls == ["cpu"]
    assert sent[0][0] == "embeddings" and torch.equal(sent[0][1], expected)
    assert torch.equal(embeddings, expected)


def test_other_ranks_receive_without_encoding(monkeypatch) -> None:
    clip = build_tiny_clip()
    from_rank0 = torch.randn(3, 32)
    calls = _counting_encoder(monkeypatch)
    sent = _two_ranks(monkeypatch, rank=1, rank0_sends=("embeddings", from_rank0))
    embeddings = encode_vocabulary_once(clip, NAMES, "single", None, "meta")
    assert calls == [] and sent == [None]
    assert embeddings.device.type == "meta" and embeddings.shape == (3, 32)


def test_rank0_error_reaches_every_rank(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("text-embedding cache file 'x.pt' is corrupt")

    monkeypatch.setattr(text_embeddings, "encode_class_names", broken)
    sent = _two_ranks(monkeypatch, rank=0)
    with pytest.raises(RuntimeError, match="x.pt"):
        encode_vocabulary_once(build_tiny_clip(), NAMES, "single", None, "cpu")
    assert sent[0][0] == "error" and "x.pt" in sent[0][1]
    _two_ranks(monkeypatch, rank=1, rank0_sends=sent[0])
    with pytest.raises(RuntimeError, match="rank 0 could not encode.*x.pt"):
        encode_vocabulary_once(build_tiny_clip(), NAMES, "single", None, "cpu")


def test_the_meta_architecture_encodes_on_model_device(monkeypatch, tiny_opts, synthetic_root):
    from chimeraseg_test_utils import SYNTHETIC_CONFIG
    from detectron2.modeling import build_model

    import chimeraseg.d2  # noqa: F401
    from chimeraseg.d2 import meta_arch
    from chimeraseg.d2.config import get_chimeraseg_cfg

    devices = []
    real = meta_arch.encode_vocabulary_once

    def record(clip, names, templates, cache, device):
        devices.append(str(device))
        return real(clip, names, templates, cache, device)

    monkeypatch.setattr(meta_arch, "encode_vocabulary_once", record)
    model = build_model(get_chimeraseg_cfg(SYNTHETIC_CONFIG, tiny_opts))
    assert devices == ["cpu", "cpu"]  # training classes, then the evaluation vocabulary
    model.set_vocabulary(["cat", "dog"])
    assert devices[-1] == str(model.device)
    assert model.vocabulary_embeddings.device == model.device
