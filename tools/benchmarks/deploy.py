"""Section deploy: the ONNX export against PyTorch, in the same interleaved rounds.

Paths (MiT-B0, whole image, logits at the head's resolution ``(B, N, H/4, W/4)``; the final
upsampling is the same for all and timed in the inference section):

- ``eager_fp32``: ``ChimeraSegModel.forward_test`` in float32 (what ``--eval-only`` runs);
- ``eager_bf16``: the same under the product's bf16 autocast (``TEST.AMP``);
- ``compile_fp32``: ``TEST.COMPILE``: the student and decoder through ``torch.compile``;
- ``onnx_fp32``: ``OnnxSegmenter`` on ``image_encoder.onnx`` (onnxruntime, CPU provider) and the
  cosine with the text embeddings in numpy;
- ``onnx_int8``: the same on ``image_encoder_int8.onnx`` (dynamic int8 matrix products).

``eager_fp32`` is required (the reference of agreement and ratios); the ratios against
``eager_bf16`` are written where it runs (bf16 emulated without AVX512-BF16 costs minutes per batch
of 8, so a batch-8 run may leave it out). Each path's argmax agreement is measured against
``eager_fp32`` on the benchmark's model and
images (random weights: a smoke check of the graphs, not of a trained model). A trained model's
agreement comes from its label PNGs: ``tools/demo.py --save-labels`` with ``--config-file`` and
with ``--onnx [--onnx-graph int8]`` on the validation images, then
``tools/evaluate_predictions.py --pred-suffix _labels --reference-dir`` (docs/PERFORMANCE.md).
The per-operator profile (batch 1) shows where each runtime spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from benchmarks.clip_setup import Vocabulary
from benchmarks.measure import interleaved, measure
from benchmarks.student import StudentPipeline
from chimeraseg.deploy.export import ExportOptions, export_model
from chimeraseg.deploy.runtime import OnnxSegmenter, import_onnxruntime, session_options
from chimeraseg.modeling import InferenceConfig

PATHS = ("eager_fp32", "eager_bf16", "compile_fp32", "onnx_fp32", "onnx_int8")
TOP_OPS = 8  # operators listed per profile


def _export(pipe: StudentPipeline, clip_model: nn.Module, vocab: Vocabulary, folder: str) -> str:
    options = ExportOptions(
        templates="single",
        gamma=0.0,
        train_vocabulary=list(vocab.names),
        size_divisibility=32,
        test_resize=(0, 0),
        source={"benchmark": "random student weights"},
    )
    target = os.path.join(folder, "export")
    export_model(pipe.model, clip_model, target, options, int8=True)
    return target


def _segmenter(folder: str, graph: str, vocab: Vocabulary, threads: int) -> OnnxSegmenter:
    segmenter = OnnxSegmenter(folder, graph=graph, threads=threads)
    segmenter.set_vocabulary(list(vocab.names), list(vocab.unseen), vocab.text.cpu().numpy())
    return segmenter


def _calls(
    pipe: StudentPipeline,
    segmenters: dict[str, OnnxSegmenter],
    images: torch.Tensor,
    paths: list[str],
) -> dict[str, Callable[[], np.ndarray]]:
    """One call per path on the same images; each returns ``(B, N, h, w)`` logits."""
    array = images.cpu().numpy()
    options = {
        "eager_fp32": InferenceConfig(),
        "eager_bf16": InferenceConfig(precision=torch.bfloat16),
        "compile_fp32": InferenceConfig(compile=True),
    }

    def eager(config: InferenceConfig) -> torch.Tensor:
        with torch.inference_mode():
            return pipe.model.forward_test(images, pipe.text, config, upsample=False)

    calls: dict[str, Callable[[], Any]] = {k: (lambda c=c: eager(c)) for k, c in options.items()}
    for name, segmenter in segmenters.items():
        calls[name] = lambda s=segmenter: s.low_res_logits(array)
    return {name: calls[name] for name in paths}


def _labels(logits: Any) -> np.ndarray:
    return np.asarray(torch.as_tensor(np.asarray(logits)).argmax(1))


def _torch_profile(fn: Callable[[], Any]) -> list[dict[str, Any]]:
    """Top operators of one call by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops) or 1
    return [
        {"op": e.key, "ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total}
        for e in ops[:TOP_OPS]
    ]


def _onnx_profile(folder: str, images: np.ndarray, threads: int) -> list[dict[str, Any]]:
    """Top operator types of one image-graph run by summed node time (onnxruntime profiling)."""
    ort = import_onnxruntime()
    options = session_options(ort, threads)  # as the runtime's sessions, plus profiling
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(folder, "ort_profile")
    session = ort.InferenceSession(
        os.path.join(folder, "image_encoder.onnx"), options, providers=["CPUExecutionProvider"]
    )
    session.run(None, {"image": images})  # warm-up inside the profile, dropped below
    session.run(None, {"image": images})
    with open(session.end_profiling()) as f:
        events = [
            e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
        ]
    last_run = events[len(events) // 2 :]
    per_op: dict[str, float] = defaultdict(float)
    for event in last_run:
        per_op[event["args"]["op_name"]] += event["dur"] / 1e3
    total = sum(per_op.values()) or 1.0
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    return [{"op": op, "ms": ms, "share": ms / total} for op, ms in top]


def run_deploy(
    args: argparse.Namespace, clip_model: nn.Module, vocab: Vocabulary, device: torch.device
) -> dict[str, Any]:
    """Images/s of every path per batch size (interleaved rounds), agreement and profiles.

    Returns:
        ``{"paths": {batch: {path: {"images_per_s", "median_s", "times_s",
        "ratio_vs_eager_fp32", "ratio_vs_eager_bf16"}}}, "argmax_agreement": {path: fraction},
        "compile_first_call_s", "profile": {"eager_fp32": [...], "onnx_fp32": [...]},
        "onnxruntime": version, "threads"}`` (batch sizes as string keys).
    """
    if "eager_fp32" not in args.deploy_paths:
        raise ValueError("--deploy-paths must include eager_fp32 (the reference)")
    if device.type != "cpu":
        raise ValueError("the deploy section measures the CPU runtimes; run it with --device cpu")
    ort = import_onnxruntime()
    threads = torch.get_num_threads()
    pipe = StudentPipeline("mit_b0", clip_model, vocab).eval()
    out: dict[str, Any] = {"onnxruntime": ort.__version__, "threads": threads, "paths": {}}
    with tempfile.TemporaryDirectory(prefix="chimeraseg-deploy-") as tmp:
        folder = _export(pipe, clip_model, vocab, tmp)
        segmenters = {
            "onnx_fp32": _segmenter(folder, "fp32", vocab, threads),
            "onnx_int8": _segmenter(folder, "int8", vocab, threads),
        }
        gen = torch.Generator().manual_seed(args.seed)
        for batch in sorted(set(args.batches) | {1}):
            images = torch.rand(batch, 3, args.size, args.size, generator=gen) * 255.0
            calls = _calls(pipe, segmenters, images, args.deploy_paths)
            if "compile_fp32" in calls:  # compiles for this shape, outside the rounds
                first = measure(calls["compile_fp32"], device, 0, 1).median_s
                out.setdefault("compile_first_call_s", {})[str(batch)] = first
            if batch == 1:
                reference = _labels(calls["eager_fp32"]())
                out["argmax_agreement"] = {
                    name: float((_labels(fn()) == reference).mean()) for name, fn in calls.items()
                }
                out["profile"] = {"eager_fp32": _torch_profile(calls["eager_fp32"])}
                out["profile"]["onnx_fp32"] = _onnx_profile(folder, images.numpy(), threads)
            seconds = interleaved(calls, device, args.warmup, args.repeats)
            out["paths"][str(batch)] = _rates(seconds, batch)
    return out


def _rates(seconds: dict[str, list[float]], batch: int) -> dict[str, dict[str, Any]]:
    rates = {
        name: {
            "images_per_s": batch / statistics.median(times),
            "median_s": statistics.median(times),
            "times_s": times,
        }
        for name, times in seconds.items()
    }
    for entry in rates.values():
        for base in ("eager_fp32", "eager_bf16"):
            if base in rates:
                entry[f"ratio_vs_{base}"] = entry["images_per_s"] / rates[base]["images_per_s"]
    return rates
