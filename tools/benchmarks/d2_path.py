"""Section 'd2': what the detectron2 path (``--eval-only``, the demo) adds to the core's inference.

The meta-architecture ``chimeraseg.d2.meta_arch.ChimeraSeg`` pads the batch, calls
``ChimeraSegModel.forward_test`` and crops / resizes each image's logits to the requested output
size. Timed on the same MiT-B0 model and vocabulary, batch 1:

- ``core``: ``forward_test`` on the padded image tensor (what the model itself costs);
- ``d2``: the meta-architecture on a detectron2 input dict;
- ``d2_sem_seg_postprocess``: the core plus detectron2's ``sem_seg_postprocess`` on its output,
  the post-processing the meta-architecture used before ``crop_and_resize``.

The three are interleaved round by round (median over rounds). Two cases: output size equal to
the input (the evaluation of a 512x512 image) and output size different (a 512x683 network input
from a 480x640 image, as a test-time resize produces).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

import torch

from benchmarks.clip_setup import Vocabulary
from benchmarks.inference import PRECISIONS
from benchmarks.measure import interleaved
from benchmarks.student import StudentPipeline
from chimeraseg.modeling import InferenceConfig

CASES = {"equal_size": ((512, 512), (512, 512)), "resized": ((512, 683), (480, 640))}


def _meta_arch(pipe: StudentPipeline, clip_model: torch.nn.Module, vocab: Vocabulary):
    from chimeraseg.d2.meta_arch import ChimeraSeg

    meta = ChimeraSeg(
        model=pipe.model,
        clip_model=clip_model,
        train_vocabulary=list(vocab.names[:2]),
        vocabulary=list(vocab.names[:2]),  # two names: cheap text encoding, replaced below
        unseen_ids=[],
        text_templates="single",
        text_cache_dir=None,
        size_divisibility=32,
    ).eval()
    meta.vocabulary_embeddings = pipe.text  # (N, D): the same vocabulary as the core
    return meta


def _timed_calls(
    pipe: StudentPipeline,
    meta: torch.nn.Module,
    inputs: list[dict[str, Any]],
    options: InferenceConfig,
    out_hw: tuple[int, int],
    sem_seg_postprocess: Callable[..., torch.Tensor],
) -> dict[str, Callable[[], object]]:
    """The three timed calls of one case: core, detectron2 path, core + old post-processing."""
    padded = meta._images(inputs)  # (1, 3, Hp, Wp) as the meta-architecture pads

    def core() -> torch.Tensor:
        return pipe.model.forward_test(padded.tensor, pipe.text, options)

    def old_path() -> torch.Tensor:
        return sem_seg_postprocess(core()[0], padded.image_sizes[0], *out_hw)

    return {"core": core, "d2": lambda: meta(inputs), "d2_sem_seg_postprocess": old_path}


def run_d2_path(
    args: argparse.Namespace, clip_model: torch.nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, Any]:
    """ms per image of the core, the detectron2 path and the old post-processing, per precision.

    Returns:
        ``{precision: {case: {"core_s", "d2_s", "d2_sem_seg_postprocess_s", "d2_vs_core",
        ...}}}`` or ``{"skipped": reason}`` without detectron2.
    """
    try:
        from detectron2.modeling.postprocessing import sem_seg_postprocess
    except ImportError as e:
        return {"skipped": f"detectron2 not importable: {e}"}
    pipe = StudentPipeline("mit_b0", clip_model, vocab).to(device)
    meta = _meta_arch(pipe, clip_model, vocab)
    gen = torch.Generator().manual_seed(args.seed)
    results: dict[str, Any] = {}
    for precision in args.precisions:
        options = InferenceConfig(precision=PRECISIONS[precision])
        meta.model.inference = options
        results[precision] = {}
        for case, (in_hw, out_hw) in CASES.items():
            if args.tiny:  # same shapes, 8x smaller
                in_hw, out_hw = tuple(v // 8 for v in in_hw), tuple(v // 8 for v in out_hw)
            image = (torch.rand(3, *in_hw, generator=gen) * 255).round().to(device)
            inputs = [{"image": image, "height": out_hw[0], "width": out_hw[1]}]

            timed = _timed_calls(pipe, meta, inputs, options, out_hw, sem_seg_postprocess)
            with torch.inference_mode():
                rounds = interleaved(timed, device, args.warmup, args.repeats)
            res = {f"{name}_s": statistics.median(s) for name, s in rounds.items()}
            res["rounds_s"] = rounds
            res["d2_vs_core"] = res["d2_s"] / res["core_s"]
            res["old_vs_core"] = res["d2_sem_seg_postprocess_s"] / res["core_s"]
            res |= {"input_hw": list(in_hw), "output_hw": list(out_hw)}
            results[precision][case] = res
    return results
