#!/usr/bin/env python
"""The paper's ablations on the synthetic world: variants x seeds -> docs/ABLATIONS.md and a plot.

Reproduces the ablation table of "Partial CLIP is Enough: Chimera-Seg for Zero-shot Semantic
Segmentation" (Tables III, VIII, XII) on a laptop: every variant of :data:`VARIANTS` is trained
from ``configs/synthetic/chimeraseg_mitb0_synthetic.yaml`` (MiT-B0, 500 CPU iterations) once per
seed (``SEED``: Gumbel noise of the distillation, weights and data order) and evaluated on
``synthetic_zs_val`` (sIoU / uIoU / hIoU at the config's ``TEST.GAMMA``)::

    python tools/ablate_synthetic.py                          # 7 variants x seeds 0 1 2
    python tools/ablate_synthetic.py --seeds 0 --variants full no_sgd
    python tools/ablate_synthetic.py --seeds 0 1 -- SOLVER.MAX_ITER 100   # overrides after --

Every finished run is appended to ``<work-dir>/results.jsonl``; a run already there is not run
again, so an interrupted sweep continues where it stopped. After every run the page
``<output>/ABLATIONS.md`` and the plot ``<output>/ablations.png`` are rewritten from all runs of
the ledger (the hand-written "What it shows" section of an existing page is kept). A run's logs and
evaluation files stay in ``<work-dir>/<variant>/seed<k>``; its checkpoints are deleted.

CLIP (``--clip-mode``):

* ``world`` (default): every variant uses the synthetic world's CLIP trained on all 12 classes
  (trained on first use, several minutes, then cached), except ``seen_only_clip`` (the control CLIP
  that never saw the 3 unseen classes) and ``random_clip`` (random weights of the same
  architecture, drawn with the run's seed). The tool sets ``MODEL.CLIP.PRETRAINED`` itself, so
  overrides of ``MODEL.CLIP.PRETRAINED`` / ``MODEL.CLIP.ALLOW_RANDOM_INIT`` are refused.
* ``config``: the CLIP given by the config and the overrides (e.g. a tiny random CLIP in tests)
  for every variant; ``random_clip`` still replaces its weights by random ones. ``seen_only_clip``
  has no meaning then: it is skipped (an error when asked for by ``--variants``).

The tool's parts are in ``tools/ablations/``: the variants and their CLIP
(``ablations/variants.py``), one run and the ledger (``ablations/runner.py``), the page and the plot
(``ablations/page.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # makes `ablations` importable

from ablations.page import PAGE_FILE, PLOT_FILE, write_report  # noqa: E402
from ablations.runner import (  # noqa: E402
    METRICS,
    RESULTS_FILE,
    append_record,
    check_settings,
    load_records,
    prepare_dataset,
    run_one,
)
from ablations.variants import (  # noqa: E402
    DEFAULT_CONFIG,
    REPO_ROOT,
    TOOL,
    VARIANTS,
    VARIANTS_BY_NAME,
    ClipResolver,
    Variant,
    select_variants,
)

from chimeraseg.utils.tool_parser import add_datasets_root, tool_parser  # noqa: E402

# What callers (and the tests) use from this script.
__all__ = [
    "DEFAULT_CONFIG",
    "VARIANTS",
    "VARIANTS_BY_NAME",
    "ClipResolver",
    "Variant",
    "get_parser",
    "main",
    "parse_args",
]

INSTALL_HINT = (
    f"{TOOL}: detectron2 is not installed; install it from source (see README.md, 'Install')"
)
EXAMPLES = (
    "python tools/ablate_synthetic.py --seeds 0 --variants full no_sgd",
    "python tools/ablate_synthetic.py --seeds 0 1 --output output/ablations -- SOLVER.MAX_ITER 100",
)
# Overrides the tool sets itself (per run or per CLIP choice).
_TOOL_KEYS = ("SEED", "OUTPUT_DIR")
_WORLD_MODE_CLIP_KEYS = ("MODEL.CLIP.PRETRAINED", "MODEL.CLIP.ALLOW_RANDOM_INIT")


# ---------------------------------------------------------------------------------- arguments
def get_parser() -> argparse.ArgumentParser:
    """The command line (config overrides last; after ``--`` when they follow a list option)."""
    parser = tool_parser(__doc__.splitlines()[0], EXAMPLES)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="K",
        help="SEED of every run, one run per variant and seed (default: 0 1 2)",
    )  # fmt: skip
    parser.add_argument(
        "--variants", nargs="+", default=None, metavar="NAME",
        help=f"default: all of {', '.join(VARIANTS_BY_NAME)}",
    )  # fmt: skip
    parser.add_argument(
        "--output", default="docs", metavar="DIR", help=f"folder of {PAGE_FILE} and the plot"
    )
    add_datasets_root(parser, "--datasets")
    parser.add_argument(
        "--work-dir", default="output/ablations", metavar="DIR", help="runs and results.jsonl"
    )
    parser.add_argument(
        "--config-file", default=DEFAULT_CONFIG, metavar="FILE",
        help="config every variant starts from (default: the synthetic MiT-B0 config)",
    )  # fmt: skip
    parser.add_argument(
        "--clip-mode", choices=("world", "config"), default="world",
        help="world: the world CLIP per variant; config: the CLIP of the config (default world)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch threads (default: torch's); 1 can be much faster on a busy machine",
    )  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="training logs on the console too")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses and checks the arguments; ``args.variants`` becomes a list of :class:`Variant`."""
    args = get_parser().parse_args(argv)
    args.opts = list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)
    if len(args.opts) % 2:
        raise SystemExit(f"{TOOL}: config overrides come in KEY VALUE pairs: {args.opts}")
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"{TOOL}: --seeds has duplicates: {args.seeds}")
    check_user_opts(args.opts, args.clip_mode)
    args.variants = select_variants(args.variants, args.clip_mode)
    return args


def check_user_opts(opts: list[str], clip_mode: str) -> None:
    """Refuses overrides of keys the tool sets itself."""
    keys = opts[::2]
    for key in keys:
        if key in _TOOL_KEYS:
            raise SystemExit(f"{TOOL}: {key} is set by the tool (--seeds / --work-dir)")
        if clip_mode == "world" and key in _WORLD_MODE_CLIP_KEYS:
            raise SystemExit(
                f"{TOOL}: {key} is set per variant by --clip-mode world (world CLIP, seen-only "
                "CLIP or random weights); use --clip-mode config to run every variant with the "
                "CLIP of the config and the overrides"
            )


# ---------------------------------------------------------------------------------- main
def settings_of(args: argparse.Namespace, dataset: dict[str, int], base_cfg: Any) -> dict[str, Any]:
    """What every run of one ledger must share: the config's path and merged content (so an
    edited YAML is not mixed with runs of the old one), overrides, CLIP mode and data."""
    config = os.path.abspath(args.config_file)
    if config.startswith(REPO_ROOT + os.sep):
        config = os.path.relpath(config, REPO_ROOT)
    return {
        "config_file": config,
        "config_sha256": hashlib.sha256(base_cfg.dump().encode()).hexdigest(),
        "opts": list(args.opts),
        "clip_mode": args.clip_mode,
        "dataset": dataset,
    }


def setup(args: argparse.Namespace) -> tuple[dict[str, int], Any]:
    """Checks detectron2, registers the data (``$DETECTRON2_DATASETS`` set first), builds the
    base config (validating the overrides); returns the dataset sizes and the base config."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2) from None
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.datasets_root)  # before registration
    import torch

    from chimeraseg.d2 import get_chimeraseg_cfg

    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = prepare_dataset(os.environ["DETECTRON2_DATASETS"])
    return dataset, get_chimeraseg_cfg(args.config_file, args.opts)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Runs the missing (variant, seed) pairs and rewrites the page; returns all ledger records."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    dataset, base_cfg = setup(args)
    settings = settings_of(args, dataset, base_cfg)
    ledger = os.path.join(args.work_dir, RESULTS_FILE)
    records = load_records(ledger)
    check_settings(records, settings, ledger)
    done = {(r["variant"], r["seed"]) for r in records}
    todo = [(v, s) for v in args.variants for s in args.seeds if (v.name, s) not in done]
    print(f"[ablate] {len(todo)} runs to do, {len(done)} in {ledger}; dataset {dataset}",
          flush=True)  # fmt: skip
    clips, start = ClipResolver(args.clip_mode, base_cfg), time.perf_counter()
    command = shlex.join(["python", TOOL, *argv])
    for index, (variant, seed) in enumerate(todo, 1):
        tag = f"[ablate] {index}/{len(todo)} {variant.name} seed {seed}"
        clip = clips.choose(variant, seed)
        print(f"{tag}: training ({textwrap.shorten(clip.description, 100)})", flush=True)
        record = run_one(variant, seed, clip, args)
        record.update(settings=settings, command=command, work_dir=args.work_dir)
        append_record(ledger, record)
        records.append(record)
        write_report(records, args.output)
        numbers = "  ".join(f"{m} {record[m]:.2f}" for m in (*METRICS, "mIoU"))
        print(f"{tag}: {numbers}  ({record['seconds']:.0f} s; sweep "
              f"{(time.perf_counter() - start) / 60:.1f} min)", flush=True)  # fmt: skip
    write_report(records, args.output)
    print(f"[ablate] {os.path.join(args.output, PAGE_FILE)}, "
          f"{os.path.join(args.output, PLOT_FILE)}; ledger {ledger}")  # fmt: skip
    return records


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/ablate_synthetic.py")
