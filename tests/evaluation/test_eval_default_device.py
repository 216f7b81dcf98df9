"""The metrics and the γ sweep stay on their inputs' device whatever the default device is.

A user who calls ``torch.set_default_device("cuda")`` and evaluates CPU logits must get the same
matrices: no intermediate tensor may be created on the default device. The tests run CPU inputs
under the ``meta`` default device, where any tensor that follows the default instead of the
inputs has no data and mixing it with the CPU inputs raises.
"""

from __future__ import annotations

import numpy as np
import torch

from chimeraseg.evaluation.gamma_sweep import (
    GammaSweepAccumulator,
    _prepare,
    biased_argmax,
    sweep_confusion,
    unseen_class_mask,
)
from chimeraseg.evaluation.metrics import confusion_matrix

N, UNSEEN, GAMMAS = 5, [1, 3], [0.0, 3.0, -1.0]


def _logits_and_gt() -> tuple[torch.Tensor, torch.Tensor]:
    """``(2, N, 4, 4)`` logits with one rounding-collapse pixel and one +inf seen logit."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, N, 4, 4, generator=generator)
    logits[0, :, 0, 0] = -5.0
    logits[0, 3, 0, 0] = 1.0  # top unseen logit u
    logits[0, 1, 0, 0] = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))  # the next below
    logits[1, 2, 3, 3] = float("inf")
    gt = torch.randint(0, N, (2, 4, 4), generator=generator)
    gt[1, 0, 0] = 255
    return logits, gt


def test_the_scene_takes_the_exact_per_gamma_paths() -> None:
    """u + 3 and its neighbour round together; +inf is sent to the reference path."""
    logits, _ = _logits_and_gt()
    _, _, _, slow = _prepare(logits, unseen_class_mask(N, UNSEEN), GAMMAS)
    assert slow.view(2, 4, 4)[0, 0, 0] and slow.view(2, 4, 4)[1, 3, 3]
    assert int(slow.sum()) == 2


def test_sweep_confusion_ignores_the_default_device() -> None:
    logits, gt = _logits_and_gt()
    mask = unseen_class_mask(N, UNSEEN)
    expected = sweep_confusion(logits, gt, mask, GAMMAS)
    with torch.device("meta"):
        from_tensor = sweep_confusion(logits, gt, mask, GAMMAS)
        from_array = sweep_confusion(logits, gt.numpy().astype(np.uint8), mask, GAMMAS)
    assert from_tensor.device.type == "cpu" and from_array.device.type == "cpu"
    assert torch.equal(from_tensor, expected) and torch.equal(from_array, expected)


def test_accumulator_update_ignores_the_default_device() -> None:
    logits, gt = _logits_and_gt()
    outside = GammaSweepAccumulator(N, UNSEEN, GAMMAS, ignore=255)
    inside = GammaSweepAccumulator(N, UNSEEN, GAMMAS, ignore=255)
    for image in range(2):
        outside.update(logits[image], gt[image])
        with torch.device("meta"):
            inside.update(logits[image], gt[image])
    assert inside.conf.device.type == "cpu" and torch.equal(inside.conf, outside.conf)


def test_biased_argmax_ignores_the_default_device() -> None:
    logits, _ = _logits_and_gt()
    mask = unseen_class_mask(N, UNSEEN)
    expected = biased_argmax(logits, mask, 2.0)
    with torch.device("meta"):
        pred = biased_argmax(logits, mask, 2.0)
    assert pred.device.type == "cpu" and torch.equal(pred, expected)


def test_biased_argmax_moves_the_unseen_mask_to_the_logits() -> None:
    """The accumulator keeps its mask on the CPU while the logits may live elsewhere (here meta,
    which stands for a GPU: a CPU ``(N,)`` tensor cannot be combined with it)."""
    logits = torch.empty(2, N, 3, 4, device="meta")
    pred = biased_argmax(logits, unseen_class_mask(N, UNSEEN), 1.0)
    assert pred.device.type == "meta" and pred.shape == (2, 3, 4) and pred.dtype == torch.long


def test_confusion_matrix_ignores_the_default_device() -> None:
    """Tensor and tensor, tensor and array, array and tensor: the NumPy count each time."""
    logits, gt = _logits_and_gt()
    pred = logits.argmax(dim=1)
    expected = confusion_matrix(pred.numpy(), gt.numpy(), N)
    with torch.device("meta"):
        results = [
            confusion_matrix(pred, gt, N),
            confusion_matrix(pred, gt.numpy(), N),
            confusion_matrix(pred.numpy(), gt, N),
        ]
    for conf in results:
        assert conf.device.type == "cpu" and np.array_equal(conf.numpy(), expected)
