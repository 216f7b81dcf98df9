"""``Lsam`` value for value: the loss module in one process with a faked process group (gathered
CLS rows, the global prototype count), prototype-to-text row alignment, dtypes and messages."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import chimeraseg.modeling.losses.semantic_alignment as sam_module
from chimeraseg.modeling.losses import SAMLoss, TrainingOutputs, semantic_alignment_loss
from chimeraseg.modeling.prototypes import ImagePrototypes
from chimeraseg.modeling.settings import LossSettings, SAMSettings

TAU_F, TAU_C = 0.07, 0.03


def _reference(protos: torch.Tensor, text: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``(O,)`` KL(P_o ‖ Q_o) in float64, with plain softmax and log."""
    protos, text, cls = (F.normalize(x.double(), dim=1) for x in (protos, text, cls))
    p = torch.softmax(protos @ cls.t() / TAU_F, dim=1)  # (O, B)
    q = torch.softmax(text @ cls.t() / TAU_C, dim=1)  # (O, B)
    return (p * (p.log() - q.log())).sum(dim=1)


def _outputs(cls: torch.Tensor, seen_text: torch.Tensor) -> TrainingOutputs:
    """Two images: seen classes (2, 0) in the first, (1,) in the second."""
    g = torch.Generator().manual_seed(3)
    d = cls.shape[1]
    prototypes = [
        ImagePrototypes(torch.tensor([2, 0]), torch.randn(2, d, generator=g), torch.zeros(0).long(),
                        torch.zeros(0, d)),
        ImagePrototypes(torch.tensor([1]), torch.randn(1, d, generator=g), torch.zeros(0).long(),
                        torch.zeros(0, d)),
    ]  # fmt: skip
    features = torch.zeros(cls.shape[0], d, 2, 2)
    labels = torch.zeros(cls.shape[0], 8, 8, dtype=torch.long)
    return TrainingOutputs(features, cls, labels, prototypes, seen_text, seen_text, 0.07)


def _loss(gather: bool) -> SAMLoss:
    return SAMLoss(LossSettings(sam=SAMSettings(tau_f=TAU_F, tau_c=TAU_C), gather=gather))


@pytest.mark.parametrize("gather", [True, False])
def test_sam_loss_in_a_faked_world_uses_gathered_rows_and_the_global_count(
    monkeypatch: pytest.MonkeyPatch, gather: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    cls, text = torch.randn(2, 8, generator=g), torch.randn(3, 8, generator=g)
    others = torch.randn(4, 8, generator=g)  # another process's CLS rows, gathered first
    counts = []

    def count(local: int, device: torch.device) -> float:
        counts.append((local, device))
        return 2.5

    monkeypatch.setattr(sam_module, "is_distributed", lambda: True)
    monkeypatch.setattr(sam_module, "mean_count_per_process", count)
    monkeypatch.setattr(sam_module, "all_gather_rows", lambda rows: (torch.cat([others, rows]), 4))
    outputs = _outputs(cls, text)
    loss = _loss(gather)(outputs, 0)
    assert counts == [(3, torch.device("cpu"))]  # every process joins, with its 3 prototypes
    protos = torch.cat([p.seen for p in outputs.prototypes])  # (3, D), ids 2, 0, 1
    rows = torch.cat([others, cls]) if gather else cls
    expected = _reference(protos, text[[2, 0, 1]], rows).sum() / 2.5
    torch.testing.assert_close(loss, expected.float())


def test_sam_loss_in_one_process_is_the_mean_over_prototypes() -> None:
    g = torch.Generator().manual_seed(1)
    cls, text = torch.randn(2, 8, generator=g), torch.randn(3, 8, generator=g)
    outputs = _outputs(cls, text)
    protos = torch.cat([p.seen for p in outputs.prototypes])
    expected = _reference(protos, text[[2, 0, 1]], cls).mean()
    torch.testing.assert_close(_loss(True)(outputs, 0), expected.float())


def test_two_images_are_enough_for_a_nonzero_kl() -> None:
    g = torch.Generator().manual_seed(2)
    protos, text, cls = (torch.randn(n, 8, generator=g) for n in (3, 3, 2))
    loss = semantic_alignment_loss(protos, text, cls, TAU_F, TAU_C)
    torch.testing.assert_close(loss, _reference(protos, text, cls).mean().float())
    assert loss > 1e-3


def test_bf16_inputs_give_a_float32_loss_of_their_values() -> None:
    g = torch.Generator().manual_seed(4)
    protos, text, cls = (torch.randn(n, 8, generator=g).bfloat16() for n in (3, 3, 5))
    loss = semantic_alignment_loss(protos, text, cls, TAU_F, TAU_C)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, _reference(protos, text, cls).mean().float())


@pytest.mark.parametrize(
    ("protos", "text", "cls", "message"),
    [
        ((3, 8), (2, 8), (4, 8), "seen_protos (3, 8) and seen_text (2, 8) must both be (O, D)"),
        ((3,), (3,), (4, 8), "seen_protos (3,) and seen_text (3,) must both be (O, D)"),
        ((3, 8), (3, 8), (4, 7), "cls (4, 7) must be (B, D) with D = 8"),
        ((3, 8), (3, 8), (8,), "cls (8,) must be (B, D) with D = 8"),
    ],
)
def test_mismatched_shapes_are_named(protos: tuple, text: tuple, cls: tuple, message: str) -> None:
    full = f"semantic_alignment_loss: {message}"
    with pytest.raises(ValueError, match=f"^{re.escape(full)}$"):
        semantic_alignment_loss(torch.zeros(protos), torch.zeros(text), torch.zeros(cls), 0.1, 0.1)


def test_one_dimensional_embeddings_still_give_a_kl() -> None:
    """D = 1 is degenerate but valid: unit vectors are ±1, and the KL is not 0."""
    protos, text = torch.tensor([[1.0], [-2.0]]), torch.tensor([[-1.0], [3.0]])
    cls = torch.tensor([[1.0], [-1.0], [2.0]])
    loss = semantic_alignment_loss(protos, text, cls, TAU_F, TAU_C)
    torch.testing.assert_close(loss, _reference(protos, text, cls).mean().float())
    assert loss > 1.0


@pytest.mark.parametrize("normaliser", [0.5, 1.0])
def test_normalisers_at_or_below_one_are_valid(normaliser: float) -> None:
    """A world of more processes than prototypes has a mean count per process under 1."""
    g = torch.Generator().manual_seed(5)
    protos, text, cls = (torch.randn(n, 8, generator=g) for n in (2, 2, 4))
    loss = semantic_alignment_loss(protos, text, cls, TAU_F, TAU_C, normaliser=normaliser)
    expected = _reference(protos, text, cls).sum() / normaliser
    torch.testing.assert_close(loss, expected.float())
