"""The one-pass γ sweep equals a separate biased argmax per γ, ties and rounding included."""

from __future__ import annotations

import pytest
import torch

from chimeraseg.evaluation import pixel_statistics
from chimeraseg.evaluation.gamma_sweep import (
    GammaSweepAccumulator,
    _class_dim_first,
    _prepare,
    biased_argmax,
    sweep_confusion,
    unseen_class_mask,
)
from chimeraseg.evaluation.metrics import confusion_matrix
from chimeraseg.evaluation.pixel_statistics import (
    _pixel_statistics_cpu,
    _pixel_statistics_generic,
)

N = 7


@pytest.fixture(autouse=True, params=["cpu_scan", "max_dim0"])
def statistics_path(request, monkeypatch):
    """Runs every test through both statistics paths, whatever the image size."""
    threshold = 0 if request.param == "cpu_scan" else 1 << 62
    monkeypatch.setattr(pixel_statistics, "_CPU_SCAN_MIN_PIXELS", threshold)
    return request.param


GAMMAS = [0.5, -1.0, 0.0, 2.0, 1.0, 0.5, 3.0]  # unsorted, with a duplicate


def _naive_predictions(logits, unseen, gammas):
    """Reference: the biased logits written out in full and argmax-ed, one γ at a time."""
    mask = unseen_class_mask(logits.shape[-3], unseen)
    out = []
    for g in gammas:
        biased = logits.clone()
        index = (slice(None),) * (logits.dim() - 3) + (mask,)
        biased[index] += torch.tensor(g, dtype=logits.dtype)
        out.append(biased.argmax(dim=-3))
    return out


def _check_sweep(logits, gt, unseen, gammas):
    mask = unseen_class_mask(logits.shape[-3], unseen)
    conf = sweep_confusion(logits, gt, mask, gammas)
    assert conf.shape == (len(gammas), logits.shape[-3], logits.shape[-3])
    for i, (g, ref) in enumerate(zip(gammas, _naive_predictions(logits, unseen, gammas))):
        assert torch.equal(biased_argmax(logits, mask, g), ref), g
        assert torch.equal(conf[i], confusion_matrix(ref, gt, logits.shape[-3])), g


@pytest.mark.parametrize("unseen", [[2, 5], [0], [0, 1, 2, 3, 4, 5, 6], [], [1, 3, 4, 6]])
def test_sweep_equals_separate_runs_on_random_logits(unseen):
    logits = torch.randn(N, 9, 11) * 3
    gt = torch.randint(0, N, (9, 11))
    gt[0, :4] = 255
    _check_sweep(logits, gt, unseen, GAMMAS)


def test_sweep_equals_separate_runs_with_many_exact_ties():
    """Integer logits and integer γ: seen/unseen and unseen/unseen ties everywhere."""
    logits = torch.randint(-2, 3, (N, 16, 16)).float()
    gt = torch.randint(0, N, (16, 16))
    unseen = [0, 3, 4]
    _check_sweep(logits, gt, unseen, [0.0, 1.0, 2.0, -1.0])
    # The test is meaningful: at γ = 1 many pixels have a seen class tied with the biased unseen.
    mask = unseen_class_mask(N, unseen)
    biased = logits + mask.float().view(-1, 1, 1)
    top = biased.max(dim=0).values
    tied = ((biased[mask] == top).any(0) & (biased[~mask] == top).any(0)).sum()
    assert tied > 20


def test_sweep_is_exact_when_adding_gamma_rounds_unseen_logits_together():
    """float32: 1 + 1e-8 == 1 + 2e-8 == 1, so the reference picks the lower unseen index."""
    logits = torch.full((4, 1, 2), -5.0)
    logits[1, 0, 0], logits[3, 0, 0] = 1e-8, 2e-8  # unseen 1 < unseen 3 in value
    logits[0, 0, 0] = 0.5  # best seen class; loses to unseen for γ = 1, wins for γ = 0
    logits[1, 0, 1], logits[3, 0, 1] = 2e-8, 1e-8
    unseen, gammas = [1, 3], [0.0, 1.0]
    gt = torch.tensor([[1, 3]])
    _check_sweep(logits, gt, unseen, gammas)
    conf = sweep_confusion(logits, gt, unseen_class_mask(4, unseen), gammas)
    assert logits[[1, 3], 0, 0].argmax() == 1  # unbiased, unseen class 3 is the larger ...
    assert conf[1, 1, 1] == 1  # ... but biased, 1 and 3 tie and the lower index wins (gt 1)
    assert conf[0, 1, 0] == 1  # γ = 0: the seen class 0
    assert _prepare(logits, unseen_class_mask(4, unseen), gammas)[3].tolist() == [True, True]


@pytest.mark.parametrize("num_classes", [3, 171, 300])
@pytest.mark.parametrize("unseen_every", [1, 2, 11, 0])  # all unseen, ..., none unseen
def test_cpu_class_scan_equals_argmax_statistics_across_blocks(
    monkeypatch, num_classes, unseen_every
):
    """Streaming scan == whole-tensor argmax: ties everywhere, -inf columns, several blocks."""
    monkeypatch.setattr(pixel_statistics, "_CPU_BLOCK", 4096)
    z = torch.randint(-1, 2, (num_classes, 9000)).float()
    z[:, 5] = float("-inf")
    z[:, 6] = float("inf")
    unseen = list(range(0, num_classes, unseen_every)) if unseen_every else []
    mask = unseen_class_mask(num_classes, unseen)
    fast, ref = _pixel_statistics_cpu(z, mask), _pixel_statistics_generic(z, mask)
    for name in ("seen_max", "seen_arg", "unseen_max", "unseen_arg", "unseen_below_max"):
        assert torch.equal(getattr(fast, name), getattr(ref, name)), name
    if len(unseen) > 1:  # the test is meaningful: duplicated unseen maxima are common
        zu = z[mask]
        assert ((zu == ref.unseen_max).sum(0) > 1).sum() > 100


def test_sweep_with_infinite_seen_and_unseen_logits_tied():
    """+inf in a seen and an unseen class: the exact path decides by class index."""
    logits = torch.randn(N, 4, 4)
    logits[[0, 3], 0, 0] = float("inf")  # seen 0 first: wins
    logits[[2, 5], 0, 1] = float("inf")  # unseen 2 first: wins
    logits[5, 0, 2] = float("inf")  # seen 5 alone
    logits[2, 1, 0] = float("inf")  # unseen 2 alone
    logits[[0, 2], 1, 1] = torch.finfo(torch.float32).max  # u + γ overflows to inf
    _check_sweep(logits, torch.randint(0, N, (4, 4)), [2, 3], GAMMAS)


def test_fast_path_is_used_for_ordinary_logits():
    """No pixel of random logits needs the per-γ fallback: the tests above test the fast path."""
    logits = torch.randn(N, 32, 32)
    _, _, _, slow = _prepare(logits, unseen_class_mask(N, [1, 5]), GAMMAS)
    assert not slow.any()


def test_sweep_with_infinite_logits_batches_and_half_precision():
    logits = torch.randn(3, N, 6, 5)
    logits[0, :, 0, 0] = float("-inf")  # every class -inf
    logits[1, 2, 1, 1] = float("inf")
    logits[2, [1, 2], 2, 2] = float("-inf")  # every unseen class -inf
    gt = torch.randint(0, N, (3, 6, 5))
    _check_sweep(logits, gt, [1, 2], GAMMAS)
    _check_sweep(torch.randn(N, 8, 8).half(), torch.randint(0, N, (8, 8)), [0, 6], [0.1, 0.3])


def test_sweep_input_errors_name_the_problem():
    mask = unseen_class_mask(N, [1])
    logits = torch.randn(N, 4, 4)
    gt = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"ground-truth shape \(4, 5\) != .*\(4, 4\) in a\.png"):
        sweep_confusion(logits, torch.zeros(4, 5, dtype=torch.long), mask, [0.0], source="a.png")
    with pytest.raises(ValueError, match=r"ground truth class ids \[9\].* in b\.png"):
        sweep_confusion(logits, gt + 9, mask, [0.0], source="b.png")
    bad = logits.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits contain NaN"):
        sweep_confusion(bad, gt, mask, [0.0])
    with pytest.raises(ValueError, match="gamma list is empty"):
        sweep_confusion(logits, gt, mask, [])
    with pytest.raises(ValueError, match="gamma must be finite, got inf"):
        biased_argmax(logits, mask, float("inf"))
    with pytest.raises(ValueError, match=r"unseen class ids \[7\]"):
        unseen_class_mask(N, [7])
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(B, N, H, W\)"):
        _class_dim_first(torch.randn(N, 4), mask)


def test_accumulator_sums_images_and_checks_class_count():
    acc = GammaSweepAccumulator(N, [2, 4], [0.0, 0.5], ignore=255)
    images = [(torch.randn(N, 5, 6), torch.randint(0, N, (5, 6))) for _ in range(3)]
    for logits, gt in images:
        acc.update(logits, gt)
    mask = unseen_class_mask(N, [2, 4])
    expected = sum(sweep_confusion(lg, gt, mask, [0.0, 0.5]) for lg, gt in images)
    assert torch.equal(acc.conf, expected) and acc.num_images == 3
    with pytest.raises(ValueError, match="logits have 5 classes, the dataset has 7 for x.png"):
        acc.update(torch.randn(5, 5, 6), images[0][1], source="x.png")
    acc.reset()
    assert acc.conf is None and acc.num_images == 0


def test_sweep_is_exact_when_gamma_rounds_subnormal_unseen_logits_together():
    """float32: 2**-103 + 2**-127 rounds to 2**-103, so unseen 1 (logit 0) ties unseen 2."""
    logits = torch.full((3, 1, 1), -1.0)  # class 0 (seen) loses to both unseen classes
    logits[2, 0, 0] = 2.0**-127  # the larger unseen logit, a subnormal; class 1 stays 0
    logits[1, 0, 0] = 0.0
    unseen, gammas = [1, 2], [0.0, 2.0**-103]
    gt = torch.tensor([[1]])
    _check_sweep(logits, gt, unseen, gammas)
    conf = sweep_confusion(logits, gt, unseen_class_mask(3, unseen), gammas)
    assert conf[0, 1, 2] == 1  # γ = 0: the larger unseen logit, class 2
    assert conf[1, 1, 1] == 1  # γ = 2**-103: tie after rounding, the lower index 1


@pytest.mark.parametrize("gammas", [[1e4], [1e4, 0.0], [0.0, 1e4]])
def test_sweep_is_exact_when_a_large_gamma_rounds_large_unseen_logits_together(gammas):
    """float32: 100 and its successor both round to 10100 after adding γ = 1e4."""
    logits = torch.full((3, 1, 1), -1.0)  # class 0 (seen) loses once γ is added
    logits[1, 0, 0] = 100.0
    logits[2, 0, 0] = torch.nextafter(torch.tensor(100.0), torch.tensor(200.0))
    unseen = [1, 2]
    gt = torch.tensor([[1]])
    _check_sweep(logits, gt, unseen, gammas)
    conf = sweep_confusion(logits, gt, unseen_class_mask(3, unseen), gammas)
    assert conf[gammas.index(1e4), 1, 1] == 1  # tie after rounding: the lower index 1
    if 0.0 in gammas:
        assert conf[gammas.index(0.0), 1, 2] == 1  # unbiased: the larger logit, class 2
