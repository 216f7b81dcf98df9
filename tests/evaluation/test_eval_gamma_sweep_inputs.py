"""γ sweep input handling: dtypes of logits, γ and labels, messages, devices, the accumulator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from chimeraseg.evaluation.gamma_sweep import (
    GammaSweepAccumulator,
    _ground_truth,
    _rounding_collapse,
    biased_argmax,
    sweep_confusion,
    unseen_class_mask,
)
from chimeraseg.evaluation.metrics import confusion_matrix
from chimeraseg.evaluation.pixel_statistics import PixelStatistics

N = 7


def _reference_confusion(logits: torch.Tensor, gt, unseen: list[int], gamma: float, ignore=255):
    """Biased argmax written out with plain ops, then counted pixel by pixel."""
    bias = torch.zeros(logits.shape[-3], dtype=logits.dtype)
    bias[unseen] = gamma
    pred = (logits + bias.view(-1, 1, 1)).argmax(dim=-3).reshape(-1).tolist()
    n = logits.shape[-3]
    conf = torch.zeros(n, n, dtype=torch.int64)
    for p, g in zip(pred, np.asarray(gt).reshape(-1).tolist()):
        if g != ignore:
            conf[g, p] += 1
    return conf


def test_gamma_is_applied_in_double_precision_for_double_logits():
    """0.0 + 0.1 ties 0.1 in float64 (seen class 0 wins); a float32 0.1 would exceed it."""
    logits = torch.tensor([0.1, 0.0], dtype=torch.float64).view(2, 1, 1)
    mask = unseen_class_mask(2, [1])
    assert biased_argmax(logits, mask, 0.1).item() == 0
    conf = sweep_confusion(logits, torch.tensor([[1]]), mask, [0.1, 0.2])
    assert conf[0].tolist() == [[0, 0], [1, 0]]  # γ = 0.1: predicted 0
    assert conf[1].tolist() == [[0, 0], [0, 1]]  # γ = 0.2: predicted 1


@pytest.mark.parametrize(
    ("logits", "mask", "message"),
    [
        (
            torch.zeros(N, 2, 2, dtype=torch.long),
            torch.zeros(N, dtype=torch.bool),
            r"^logits must be floating point, got torch.int64$",
        ),
        (
            torch.zeros(N, 2, 2),
            torch.zeros(5, dtype=torch.bool),
            r"^unseen mask shape \(5,\) != \(7,\) logit classes$",
        ),
    ],
)
def test_logit_checks_name_dtype_and_shapes(logits, mask, message):
    """Integer logits and a mask of the wrong length are rejected with the exact reason."""
    with pytest.raises(ValueError, match=message):
        biased_argmax(logits, mask, 0.0)


def test_sweep_messages_without_a_source_end_at_the_values():
    """Without a file name the messages name the problem and nothing else."""
    mask = unseen_class_mask(N, [1])
    logits = torch.randn(N, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"^ground-truth shape \(4, 5\) != prediction shape "):
        sweep_confusion(logits, torch.zeros(4, 5, dtype=torch.long), mask, [0.0])
    with pytest.raises(ValueError, match=r"prediction shape \(4, 4\)$"):
        sweep_confusion(logits, torch.zeros(4, 5, dtype=torch.long), mask, [0.0])
    with pytest.raises(ValueError, match=r"^the gamma list is empty$"):
        sweep_confusion(logits, torch.zeros(4, 4, dtype=torch.long), mask, [])


def test_uint16_labels_of_many_classes_are_counted():
    """16-bit ground truth (ids above 255, as in 459-class sets) gives the reference matrix."""
    n = 300
    logits = torch.randn(n, 2, 3, generator=torch.Generator().manual_seed(1))
    gt = np.array([[299, 0, 256], [17, 65535, 299]], dtype=np.uint16)
    unseen = [5, 256, 299]
    conf = sweep_confusion(logits, gt, unseen_class_mask(n, unseen), [0.0, 2.0], ignore=65535)
    for i, g in enumerate([0.0, 2.0]):
        ref = _reference_confusion(logits, gt.astype(np.int64), unseen, g, ignore=65535)
        assert torch.equal(conf[i], ref)
    assert conf[0].sum() == 5


def test_int64_labels_are_checked_without_narrowing():
    """A 64-bit label 2**32 + 1 is reported as out of range, not wrapped into a valid id."""
    mask = unseen_class_mask(3, [2])
    gt = np.array([[0, 2**32 + 1]], dtype=np.int64)
    message = r"^ground truth class ids \[4294967297\] are outside \[0, 3\) or 255$"
    with pytest.raises(ValueError, match=message):
        sweep_confusion(torch.zeros(3, 1, 2), gt, mask, [0.0])


def test_read_only_labels_are_copied_not_aliased():
    """A read-only array (e.g. from a PIL image) is counted quietly and never written through."""
    logits = torch.randn(N, 3, 4, generator=torch.Generator().manual_seed(2))
    gt = np.arange(12, dtype=np.uint8).reshape(3, 4) % N
    gt.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conf = sweep_confusion(logits, gt, unseen_class_mask(N, [3]), [0.5])
    assert torch.equal(conf[0], _reference_confusion(logits, gt, [3], 0.5))
    wide = np.zeros((3, 4), dtype=np.int64)
    wide.flags.writeable = False
    flat = _ground_truth(wide, logits, 255, None)
    flat[0] = 5
    assert wide[0, 0] == 0


def test_rounding_collapse_needs_a_smaller_unseen_logit_that_meets_the_maximum():
    """True only where adding γ rounds a strictly smaller unseen logit onto the maximum."""
    one_up = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item()
    inf = math.inf
    stats = PixelStatistics(
        seen_max=torch.zeros(3),
        seen_arg=torch.zeros(3, dtype=torch.long),
        unseen_max=torch.tensor([one_up, -inf, 1.0]),
        unseen_arg=torch.ones(3, dtype=torch.long),
        unseen_below_max=torch.tensor([1.0, -inf, 0.5]),
    )
    idx = torch.arange(3)
    assert _rounding_collapse(stats, torch.tensor(0.0), idx).tolist() == [False, False, False]
    # 2 + 2**-23 is halfway between 2 and its successor: rounds to even, i.e. to 2 == 1 + 1
    assert _rounding_collapse(stats, torch.tensor(1.0), idx).tolist() == [True, False, False]


def test_unseen_class_mask_is_created_on_the_requested_device():
    """The mask is built directly on the device asked for (here the data-free meta device)."""
    assert unseen_class_mask(4, [1], device="meta").device.type == "meta"
    assert unseen_class_mask(4, [1, 3]).tolist() == [False, True, False, True]


def test_accumulator_uses_its_ignore_value_and_source():
    """The accumulator's own ignore label is skipped and the file name reaches the messages."""
    acc = GammaSweepAccumulator(2, [1], [0.0], ignore=0)
    logits = torch.tensor([1.0, 0.0]).view(2, 1, 1).expand(2, 2, 2).contiguous()  # predicts 0
    acc.update(logits, torch.tensor([[0, 1], [1, 1]]))
    assert acc.conf[0].tolist() == [[0, 0], [3, 0]]  # gt 1 -> pred 0 three times; gt 0 ignored
    with pytest.raises(
        ValueError, match=r"^ground truth class ids \[9\] are outside .* in c\.png$"
    ):
        acc.update(logits, torch.full((2, 2), 9), source="c.png")
    with pytest.raises(ValueError, match=r"^logits have 3 classes, the dataset has 2$"):
        acc.update(torch.zeros(3, 2, 2), torch.ones(2, 2, dtype=torch.long))


def test_accumulator_counts_every_image_of_a_batch():
    """A (B, N, H, W) batch adds B images and the sum of their reference matrices."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, N, 2, 4, generator=gen)
    gt = torch.randint(0, N, (3, 2, 4), generator=gen)
    acc = GammaSweepAccumulator(N, [2, 4], [0.0, 1.5], ignore=255)
    acc.update(logits, gt)
    acc.update(logits[0], gt[0])
    assert acc.num_images == 4
    for i, g in enumerate([0.0, 1.5]):
        ref = sum(_reference_confusion(logits[b], gt[b], [2, 4], g) for b in (0, 0, 1, 2))
        assert torch.equal(acc.conf[i], ref)


@pytest.mark.cuda
def test_sweep_on_gpu_logits_with_cpu_mask_and_numpy_labels():
    """CUDA logits with a CPU mask and NumPy labels: matrices on the GPU, reference values."""
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(N, 5, 6, generator=gen)
    logits[[1, 3], 0, 0] = torch.tensor([1e-8, 2e-8])  # rounds together at γ = 1
    logits[0, 0, 0] = 0.5
    gt = torch.randint(0, N, (5, 6), generator=gen).numpy().astype(np.uint8)
    gammas, unseen = [0.0, 1.0, -0.5], [1, 3]
    mask = unseen_class_mask(N, unseen)
    conf = sweep_confusion(logits.cuda(), gt, mask, gammas)
    assert conf.device.type == "cuda"
    for i, g in enumerate(gammas):
        assert torch.equal(conf[i].cpu(), _reference_confusion(logits, gt, unseen, g))
        pred = biased_argmax(logits.cuda(), mask, g)
        assert pred.device.type == "cuda"
        from_gpu_pred = confusion_matrix(pred, gt, N)  # device of the tensor, not the array
        from_gpu_gt = confusion_matrix(pred.cpu().numpy(), torch.as_tensor(gt).cuda(), N)
        assert from_gpu_pred.device.type == "cuda" and from_gpu_gt.device.type == "cuda"
        assert torch.equal(from_gpu_pred.cpu(), conf[i].cpu())
        assert torch.equal(from_gpu_gt.cpu(), conf[i].cpu())
    acc = GammaSweepAccumulator(N, unseen, gammas, ignore=255)
    acc.update(logits.cuda(), gt)
    acc.update(logits, gt)  # a CPU image added to the GPU sum
    assert acc.conf.device.type == "cuda" and torch.equal(acc.conf.cpu(), 2 * conf.cpu())
