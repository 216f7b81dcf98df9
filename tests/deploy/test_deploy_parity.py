"""The ONNX export against PyTorch on a model trained on the synthetic world (default suite).

The PyTorch reference is the product's path: images padded with the mean colour to the size
divisibility, ``forward_test`` at the head's resolution, one resample to the image size
(``resize_logits``), the evaluator's γ rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deploy_world import BAKED, BAKED_UNSEEN, RUN, SLIDE, Trained

from chimeraseg.clip.text import encode_class_names
from chimeraseg.data.splits import get_split
from chimeraseg.deploy import OnnxSegmenter
from chimeraseg.deploy.export import ImageEncoderGraph
from chimeraseg.evaluation.gamma_sweep import biased_argmax, unseen_class_mask
from chimeraseg.evaluation.metrics import confusion_matrix, zero_shot_metrics
from chimeraseg.modeling.inference import resize_logits

pytestmark = pytest.mark.slow
NAMES = list(get_split("synthetic").class_names)


def _padded(image: np.ndarray, model: torch.nn.Module, multiple: int = 32) -> torch.Tensor:
    """``(1, 3, Hp, Wp)`` float image padded bottom/right with the mean colour."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    mean = model.pixel_mean
    return F.pad(x - mean, (0, pw, 0, ph)) + mean


@torch.inference_mode()
def _torch_logits(trained: Trained, image: np.ndarray, text: torch.Tensor, **kw) -> np.ndarray:
    """``(N, H, W)`` logits of the PyTorch path (whole image unless ``options`` says slide)."""
    model = trained.model
    padded = _padded(image, model)
    size = image.shape[:2]
    out = model.forward_test(padded, text, upsample=False, **kw)[0]  # (N, h, w) or (N, Hp, Wp)
    if tuple(out.shape[-2:]) == tuple(padded.shape[-2:]):
        return out[:, : size[0], : size[1]].numpy()
    return resize_logits(out, tuple(padded.shape[-2:]), size, size).numpy()


def _random_image(hw: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_pixel_embeddings_match_pytorch(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    encoder = ImageEncoderGraph(trained.model).eval()
    images = [trained.val[0][0], trained.val[1][0]]  # 80 x 100: not multiples of 32, not square
    batch = np.stack([im.transpose(2, 0, 1) for im in images]).astype(np.float32)
    for x in (batch, np.ascontiguousarray(batch[:1, :, :61, :97])):  # batch 2; odd sizes
        with torch.no_grad():
            reference = encoder(torch.from_numpy(x)).numpy()
        onnx = segmenter.encode(x)
        assert (
            onnx.shape
            == reference.shape
            == (x.shape[0], trained.model.head.embed_dim, -(-x.shape[2] // 4), -(-x.shape[3] // 4))
        )
        assert np.abs(onnx - reference).max() <= 1e-4


def test_labels_and_metrics_match_on_validation(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    text = encode_class_names(trained.clip, NAMES, RUN.templates)
    split = get_split("synthetic")
    unseen = unseen_class_mask(len(NAMES), split.unseen)
    agree = labelled = 0
    conf_torch = np.zeros((len(NAMES), len(NAMES)), dtype=np.int64)
    conf_onnx = np.zeros_like(conf_torch)
    for image, label in trained.val:
        reference = biased_argmax(
            torch.from_numpy(_torch_logits(trained, image, text)), unseen, RUN.gamma
        )
        prediction = segmenter.predict(image, gamma=RUN.gamma).labels
        valid = label != 255
        agree += int((prediction == reference.numpy())[valid].sum())
        labelled += int(valid.sum())
        conf_torch += confusion_matrix(reference.numpy(), label, len(NAMES))
        conf_onnx += confusion_matrix(prediction, label, len(NAMES))
    assert agree / labelled >= 0.999
    want = zero_shot_metrics(conf_torch, split.seen, split.unseen, NAMES)
    got = zero_shot_metrics(conf_onnx, split.seen, split.unseen, NAMES)
    for key in ("mIoU", "sIoU", "uIoU", "hIoU"):
        assert abs(got[key] - want[key]) <= 0.1, (key, got[key], want[key])


def test_text_graph_matches_pytorch_for_new_words(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    words = ["purple cat", "sofa, couch", "wall-concrete", "a word never in training"]
    reference = encode_class_names(trained.clip, words, RUN.templates).numpy()
    onnx = segmenter.embed_vocabulary(words)
    assert onnx.shape == reference.shape
    assert np.abs(onnx - reference).max() <= 1e-5


def test_non_square_image_and_new_vocabulary(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    words = ["grass", "purple cat", "sky"]
    segmenter.set_vocabulary(words, [1])
    image = _random_image((70, 131))
    text = encode_class_names(trained.clip, words, RUN.templates)
    reference = _torch_logits(trained, image, text)
    onnx = segmenter.logits(image)
    assert onnx.shape == reference.shape == (3, 70, 131)
    assert np.abs(onnx - reference).max() <= 1e-3  # logits are cosines / 0.07


def test_sliding_windows_match_pytorch(trained: Trained) -> None:
    segmenter = OnnxSegmenter(trained.folder, graph="fp32", mode="slide")
    text = encode_class_names(trained.clip, NAMES, RUN.templates)
    slide = SLIDE.__class__(**{**SLIDE.__dict__, "mode": "slide"})
    for image, _ in trained.val[:2]:
        reference = _torch_logits(trained, image, text, options=slide)
        onnx = segmenter.logits(image)
        assert onnx.shape == reference.shape
        assert np.abs(onnx - reference).max() <= 1e-3


def test_baked_graph_equals_the_two_graph_path(trained: Trained) -> None:
    baked = OnnxSegmenter(trained.folder)  # the folder has segmenter.onnx: baked by default
    assert baked.graph == "baked" and baked.names == BAKED
    two = OnnxSegmenter(trained.folder, graph="fp32")
    two.set_vocabulary(BAKED, BAKED_UNSEEN)
    for image, _ in trained.val[:3]:
        a, b = baked.predict(image), two.predict(image)
        assert np.abs(a.scores - b.scores).max() <= 1e-4
        assert np.array_equal(a.labels, b.labels)
        assert a.unseen_mask.tolist() == [False, False, True]


def test_sessions_run_without_the_memory_arena(trained: Trained) -> None:
    """The arena kept every block it grew to (twice the peak at batch 8); both graphs run
    without it."""
    segmenter = OnnxSegmenter(trained.folder, graph="fp32")
    for session in (segmenter._image, segmenter._text):
        assert session.get_session_options().enable_cpu_mem_arena is False
