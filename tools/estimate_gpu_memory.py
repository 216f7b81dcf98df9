#!/usr/bin/env python
"""Computed (not measured) GPU memory of one training process of a config.

Usage::

    python tools/estimate_gpu_memory.py configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml
    python tools/estimate_gpu_memory.py --markdown configs/*/chimeraseg_*.yaml   # MODEL_ZOO.md

What it counts and leaves out: :mod:`chimeraseg.d2.memory_estimate`. It is a lower bound of
``torch.cuda.max_memory_allocated``; ``tools/check_cluster.py`` measures the peak on the GPUs of
the machine it runs on and prints it next to this figure.
"""

from __future__ import annotations

import multiprocessing
import os

import chimeraseg.d2  # noqa: F401 -- registers the meta-architecture, backbones and datasets
from chimeraseg.d2.memory_estimate import (  # noqa: F401 -- re-exported for the tests
    GIB,
    MemoryEstimate,
    estimate,
    saved_activation_bytes,
)
from chimeraseg.utils.tool_parser import tool_parser

EXAMPLES = (
    "python tools/estimate_gpu_memory.py configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml",
    "python tools/estimate_gpu_memory.py --markdown configs/*/chimeraseg_*.yaml",
)


def markdown_row(e: MemoryEstimate) -> str:
    """One MODEL_ZOO.md memory row, in GiB."""
    return (
        f"| `{e.config}` | {e.images_per_gpu} x {e.crop[0]}x{e.crop[1]} | "
        f"{e.weights / GIB:.2f} | {e.gradients_and_optimizer / GIB:.2f} | "
        f"{e.activations / GIB:.2f} | **{e.total / GIB:.1f}** (computed) |"
    )


def main(argv: list[str] | None = None) -> int:
    """Prints the estimate of every config given (each computed in its own process)."""
    parser = tool_parser(__doc__.split("\n")[0], EXAMPLES)
    parser.add_argument("configs", nargs="*", metavar="FILE", help="config files")
    parser.add_argument(
        "--config-file", action="append", default=[], metavar="FILE",
        help="a config file (repeatable; same as a positional FILE)",
    )  # fmt: skip
    parser.add_argument(
        "--markdown", action="store_true", help="print the estimates as a Markdown table"
    )
    args = parser.parse_args(argv)
    files = [*args.config_file, *args.configs]
    if not files:
        parser.error("give at least one config file")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        parser.error(f"config files not found: {missing}")
    if args.markdown:
        print("| config | per GPU | weights | grads + AdamW | activations | total GiB |")
        print("|---|---|---|---|---|---|")
    # One fresh process per config: memory of one model is given back before the next is built.
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for fields in pool.imap(_estimate_fields, files):
            _print(MemoryEstimate(*fields), args.markdown)
    return 0


def _estimate_fields(path: str) -> tuple:
    """:func:`estimate` as a plain tuple (crosses the process boundary)."""
    return tuple(estimate(path))


def _print(e: MemoryEstimate, markdown: bool) -> None:
    """One MODEL_ZOO.md memory row, or one sentence."""
    if markdown:
        print(markdown_row(e), flush=True)
        return
    print(
        f"{e.config}: {e.total / GIB:.2f} GiB per GPU, computed ({e.images_per_gpu} images of "
        f"{e.crop[0]}x{e.crop[1]}): weights {e.weights / GIB:.2f}, gradients + AdamW "
        f"{e.gradients_and_optimizer / GIB:.2f}, saved activations {e.activations / GIB:.2f}; "
        "excludes CUDA context and allocator overhead",
        flush=True,
    )


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/estimate_gpu_memory.py")
