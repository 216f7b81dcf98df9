#!/usr/bin/env python
"""Before a long run: train, evaluate and measure ChimeraSeg on the devices of this machine.

Usage::

    python tools/check_cluster.py       # every visible GPU (NCCL); without one, 2 CPU processes
    make check-gpus CHECK_ARGS="--iterations 40 --measure-config <a paper config>"
    python tools/check_cluster.py --device cpu --num-processes 2 --checks train_fp32,eval_only

Checks (docs/CLUSTER_CHECK.md): ``train_fp32`` (short DDP training on the synthetic world with its
own CLIP: finite losses, each rank's SGD loss = the one-process global-batch value, identical
parameters and buffers, SyncBatchNorm), ``eval_only`` (``--eval-only`` on that checkpoint),
``train_bf16`` / ``train_fp16`` (the same under AMP), ``measure`` (s/iter, images/s/GPU, peak
memory next to tools/estimate_gpu_memory.py's figure, projected schedule time, inference images/s
in fp32/bf16/fp16; random weights). Writes ``report.json`` and ``report.md`` into ``--output``,
prints PASS/FAIL per check with the command that reruns a failing one, exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from chimeraseg.clip.cli import add_clip_arguments
from chimeraseg.utils.tool_parser import add_deprecated_alias, tool_parser

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_CONFIG = os.path.join(REPO_ROOT, "configs", "synthetic", "chimeraseg_mitb0_synthetic.yaml")
MEASURE_CONFIG = os.path.join(
    REPO_ROOT, "configs", "coco-stuff-164k-156", "chimeraseg_mitb4_80k.yaml"
)
CHECK_DATASETS = os.path.join("output", "cluster_check", "datasets")
EXAMPLES = (
    "python tools/check_cluster.py",
    "python tools/check_cluster.py --device cpu --num-processes 2 --checks train_fp32,eval_only",
)


def get_parser() -> argparse.ArgumentParser:
    from chimeraseg.d2.cluster_check import CHECKS
    from chimeraseg.d2.cluster_check.probes import FAULTS

    p = tool_parser(__doc__.splitlines()[1], EXAMPLES)
    p.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated of {CHECKS}")
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--num-processes", type=int, help="default: every visible GPU; 2 on the CPU")
    p.add_argument(
        "--output", metavar="DIR", help="run folder (default output/cluster_check/<UTC time>)"
    )
    p.add_argument(
        "--datasets-root", metavar="DIR", default=CHECK_DATASETS,
        help="datasets root the synthetic set is written to (default: %(default)s)",
    )  # fmt: skip
    add_deprecated_alias(p, "--datasets", "--datasets-root")
    p.add_argument("--config-file", default=CHECK_CONFIG, help="config of the correctness checks")
    p.add_argument("--iterations", type=int, default=20, help="iterations of train_fp32")
    p.add_argument("--amp-iterations", type=int, default=5, help="iterations of the AMP checks")
    p.add_argument(
        "--images-per-process", type=int, default=2, help="training batch per process (default 2)"
    )
    add_clip_arguments(p, name=False, default_weights=None, random_help="random CLIP (tool tests)")
    p.add_argument("--measure-config", default=MEASURE_CONFIG, help="paper config to measure")
    p.add_argument(
        "--measure-opt", nargs=2, action="append", default=[], metavar=("KEY", "VAL"),
        help="an override of --measure-config (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--measure-iterations", type=int, default=10, help="timed training iterations (10)"
    )
    p.add_argument(
        "--measure-warmup", type=int, default=3, help="untimed iterations before them (3)"
    )
    p.add_argument("--infer-size", type=int, default=512, help="image side of inference (512)")
    p.add_argument(
        "--infer-iterations", type=int, default=10, help="timed inference iterations (10)"
    )
    p.add_argument("--timeout-minutes", type=float, default=20.0, help="collective timeout")
    p.add_argument("--plant-fault", action="append", default=[], choices=FAULTS,
                   help="plant a fault (to test the checker itself)")  # fmt: skip
    p.add_argument("opts", nargs=argparse.REMAINDER, help="overrides of --config-file KEY VALUE")
    return p


def _clip_opts(args: argparse.Namespace) -> list[str]:
    """CLIP weights of the correctness config: given, random (explicit) or the world CLIP."""
    if args.allow_random_clip:
        return ["MODEL.CLIP.PRETRAINED", "", "MODEL.CLIP.ALLOW_RANDOM_INIT", "True"]
    if args.clip_weights:
        return ["MODEL.CLIP.PRETRAINED", args.clip_weights]
    from chimeraseg.d2 import get_chimeraseg_cfg
    from chimeraseg.world.cache import ensure_world_clip
    from chimeraseg.world.clip_training import WorldClipConfig

    name = get_chimeraseg_cfg(args.config_file, list(args.opts)).MODEL.CLIP.NAME
    return [
        "MODEL.CLIP.PRETRAINED",
        str(ensure_world_clip(WorldClipConfig(model_config=name)).checkpoint),
    ]


def options_from_args(args: argparse.Namespace, argv: list[str]):
    """The runner's :class:`RunOptions` of the parsed arguments."""
    import torch

    from chimeraseg.d2.cluster_check import CHECKS, RunOptions
    from chimeraseg.d2.cluster_check.phases import CheckPlan

    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise SystemExit(
            f"tools/check_cluster.py: --checks {unknown or '(empty)'}: not in {CHECKS}"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("tools/check_cluster.py: --device cuda, but torch sees no CUDA device")
    processes = args.num_processes or (torch.cuda.device_count() if device == "cuda" else 2)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    output = os.path.abspath(args.output or os.path.join("output", "cluster_check", stamp))
    opts = [*_clip_opts(args), "MODEL.DEVICE", device, *args.opts]
    measure = {
        "config_file": args.measure_config,
        "opts": [x for pair in args.measure_opt for x in pair],
        "device": device,
        "iterations": args.measure_iterations,
        "warmup": args.measure_warmup,
        "infer_size": args.infer_size,
        "infer_iterations": args.infer_iterations,
    }
    plan = CheckPlan(
        run_dir=output, config_file=args.config_file, opts=tuple(opts),
        datasets_root=os.path.abspath(args.datasets_root), phases=(), iterations=args.iterations,
        amp_iterations=args.amp_iterations, images_per_process=args.images_per_process,
        faults=tuple(args.plant_fault), measure=measure,
    )  # fmt: skip
    return RunOptions(
        argv=tuple(argv), checks=checks, device=device, processes=processes, output=output,
        datasets_root=plan.datasets_root, plan=plan,
        timeout_minutes=args.timeout_minutes,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the check; prints the summary; 0 when no check failed, else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from chimeraseg.d2.cluster_check import run_cluster_check

    args = get_parser().parse_args(argv)
    options = options_from_args(args, [os.path.join("tools", "check_cluster.py"), *argv])
    try:
        report, text = run_cluster_check(options)
    except FileExistsError as e:
        raise SystemExit(f"tools/check_cluster.py: {e}") from None
    print(text, flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/check_cluster.py")
