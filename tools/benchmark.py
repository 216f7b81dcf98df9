"""ChimeraSeg speed and memory, each figure next to its competitor from the same run.

Sections (see docs/PERFORMANCE.md for the method and the latest numbers):

1. inference: images/s, peak memory and per-stage profile of the students (MiT-B0, MiT-B4,
   ViT-B/16 + CSH + cosine classification against 171 classes) vs a MaskCLIP-style full CLIP
   ViT-B/16 dense baseline, in fp32 and in bf16 (ratios at equal precision, and bf16 vs fp32 with
   the argmax agreement of each model);
2. breakdown (fp32, batch 1): time per stage and achieved GFLOP/s vs this machine's dense-matmul
   GFLOP/s, plus exactness checks of the optimised paths and the inexact stride-8 option;
   d2: what detectron2's path (meta-architecture, post-processing) adds to the core's inference;
3. train: one training step (batch 2) split into teacher, pseudo masks, student, losses, backward,
   optimizer;
4. evaluator: pixels/s of ChimeraSeg's evaluator vs detectron2's SemSegEvaluator;
5. pseudo: pseudo-mask generation ms per image;
6. deploy: the ONNX export (onnxruntime fp32 and int8) vs PyTorch eager fp32, bf16 and
   ``torch.compile`` (MiT-B0) in the same rounds, argmax agreement, per-operator profiles.

"x machine GEMM" divides by the faster of two fp32 GEMM probes, torch's and onnxruntime's.

Examples (also at the end of ``--help``)::

    python tools/benchmark.py --allow-random-clip --output-json bench.json
    python tools/benchmark.py --clip-weights openai --device cuda --precisions bf16
    python tools/benchmark.py --tiny --output-json /tmp/tiny.json   # seconds; the smoke test's
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from chimeraseg.clip.cli import add_clip_arguments, clip_weights
from chimeraseg.utils.output_files import atomic_write_text
from chimeraseg.utils.tool_parser import add_deprecated_alias, tool_parser

sys.path.insert(0, str(Path(__file__).resolve().parent))  # makes `benchmarks` importable

from benchmarks.clip_setup import build_clip, build_vocabulary  # noqa: E402
from benchmarks.d2_path import run_d2_path  # noqa: E402
from benchmarks.deploy import PATHS as DEPLOY_PATHS  # noqa: E402
from benchmarks.deploy import run_deploy  # noqa: E402
from benchmarks.evaluator import run_evaluator  # noqa: E402
from benchmarks.inference import PRECISIONS, rescale_fractions, run_inference  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.markdown import report_markdown  # noqa: E402
from benchmarks.measure import matmul_gflops, onnxruntime_matmul_gflops  # noqa: E402
from benchmarks.pseudo import run_pseudo_masks  # noqa: E402
from benchmarks.report import print_report  # noqa: E402
from benchmarks.training import run_training  # noqa: E402

SECTIONS = ("inference", "d2", "train", "evaluator", "pseudo", "deploy")
EXAMPLES = (
    "python tools/benchmark.py --allow-random-clip --output-json bench.json",
    "python tools/benchmark.py --clip-weights openai --device cuda --precisions bf16",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--help`` lists them)."""
    p = tool_parser(__doc__.split("Examples (")[0].rstrip(), EXAMPLES)
    add_clip_arguments(
        p,
        name=False,
        default_weights=None,
        random_help="time a randomly initialised ViT-B/16 CLIP (speed does not depend on the "
        "weights); this or --clip-weights is required",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny random CLIP, 64x64 images, 1 repeat: checks the tool works (numbers are noise)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=list(PRECISIONS),
        help="inference precisions, each model against the baseline at the same one",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all)")
    p.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="inference batch sizes")
    p.add_argument("--train-batch", type=int, default=2, help="training-step batch (default: 2)")
    p.add_argument(
        "--models", nargs="+", default=["mit_b0", "mit_b4", "vit_b16"], help="student backbones"
    )
    p.add_argument("--train-model", default="mit_b0", help="student of the training step")
    p.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
        help="sections to run (default: all)",
    )  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported")
    p.add_argument("--gemm-size", type=int, default=2048, help="side of the fp32 GEMM probe")
    p.add_argument("--eval-images", type=int, default=8, help="predictions for the evaluator")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    p.add_argument(
        "--deploy-paths",
        nargs="+",
        default=list(DEPLOY_PATHS),
        choices=DEPLOY_PATHS,
        help="paths of the deploy section (compile_fp32 compiles for minutes on a small CPU)",
    )
    p.add_argument("--output-json", metavar="FILE", help="write the full report here (JSON)")
    p.add_argument("--output-markdown", metavar="FILE", help="write the tables here (Markdown)")
    add_deprecated_alias(p, "--output", "--output-json")
    add_deprecated_alias(p, "--markdown", "--output-markdown")
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.batches, args.repeats, args.warmup = 64, [1, 2], 1, 0
        args.gemm_size, args.eval_images = 256, 2
        args.deploy_paths = [p for p in args.deploy_paths if p != "compile_fp32"]
    return args


def main(argv: list[str] | None = None) -> dict:
    """Runs the selected sections, prints the tables and returns (and writes) the report."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    clip_model, clip_desc = build_clip(args)
    clip_model = clip_model.to(device)
    random_weights = args.tiny or clip_weights(args) is None
    vocab = build_vocabulary(clip_model, random_weights)
    gemm = {"start": matmul_gflops(device, args.gemm_size, max(args.warmup, 1), 5)}
    gemm_bf16 = matmul_gflops(device, args.gemm_size, max(args.warmup, 1), 5, torch.bfloat16)
    args.gemm_gflops = gemm["start"]["gflops"]
    report: dict = {
        "machine": machine_info(device),
        "settings": {k: v for k, v in vars(args).items() if k not in ("gemm_gflops",)},
        "clip": clip_desc,
        "num_classes": len(vocab.names),
        "gemm": gemm,
        "gemm_bf16": gemm_bf16,
    }
    sections = {
        "inference": lambda: run_inference(
            args, clip_model, vocab, device, {"fp32": args.gemm_gflops, "bf16": gemm_bf16["gflops"]}
        ),
        "d2": lambda: run_d2_path(args, clip_model, vocab, device),
        "train": lambda: run_training(args, clip_model, vocab, device),
        "evaluator": lambda: run_evaluator(args),
        "pseudo": lambda: run_pseudo_masks(args, clip_model, vocab, device),
        "deploy": lambda: run_deploy(args, clip_model, vocab, device),
    }
    for name in args.sections:
        print(f"[benchmark] running section '{name}' ...", file=sys.stderr, flush=True)
        report[name] = sections[name]()
    # Shared machines vary: probe again and take the best as "the machine's" GEMM rate. The
    # fractions in the breakdown used the start probe; rescale them if the end probe was faster.
    gemm["end"] = matmul_gflops(device, args.gemm_size, 1, 5)
    if device.type == "cpu":
        gemm["onnxruntime"] = onnxruntime_matmul_gflops(args.gemm_size, 1, 5)
    probes = {"torch": max(gemm["start"]["gflops"], gemm["end"]["gflops"])}
    if gemm.get("onnxruntime"):
        probes["onnxruntime"] = gemm["onnxruntime"]["gflops"]
    gemm["kernel"] = max(probes, key=probes.get)
    gemm["gflops"] = probes[gemm["kernel"]]
    gemm["size"] = args.gemm_size
    if "fp32" in report.get("inference", {}):
        rescale_fractions(report["inference"]["fp32"], args.gemm_gflops / gemm["gflops"])
    report["machine"]["load_average_1min_end"] = machine_info(device).get("load_average_1min")
    print_report(report)
    if args.output_json:
        atomic_write_text(args.output_json, json.dumps(report, indent=2, default=str))
    if args.output_markdown:
        atomic_write_text(args.output_markdown, report_markdown(report))
    return report


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/benchmark.py")
