"""One ablation run (train + evaluate a variant with a seed) and the ledger of finished runs.

Every finished run is one JSON line of ``results.jsonl``; a run already there is not run again, so
an interrupted sweep continues where it stopped. A ledger holds runs of one set of settings only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ablations.variants import TOOL, ClipChoice, Variant
from chimeraseg.utils.output_files import refuse_symlink

RESULTS_FILE = "results.jsonl"
METRICS = ("sIoU", "uIoU", "hIoU")
_LOGGERS = ("detectron2", "chimeraseg", "fvcore")


# ---------------------------------------------------------------------------------- ledger
def load_records(path: str) -> list[dict[str, Any]]:
    """The finished runs of ``results.jsonl`` (a torn last line of a killed write is skipped)."""
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def append_record(path: str, record: dict[str, Any]) -> None:
    """Appends one run as a JSON line (flushed and synced); a ledger that is a symbolic link is
    refused (an append cannot go through a new file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(refuse_symlink(path, "ledger"), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_settings(records: list[dict[str, Any]], settings: dict[str, Any], path: str) -> None:
    """Refuses to mix runs of other settings (config, overrides, CLIP mode, data) in one ledger."""
    other = [r for r in records if r.get("settings") != settings]
    if other:
        raise SystemExit(
            f"{TOOL}: {path} holds {len(other)} runs made with other settings "
            f"(e.g. {other[0].get('settings')}, now {settings}); use another --work-dir or "
            "delete that file"
        )


# ---------------------------------------------------------------------------------- one run
@contextlib.contextmanager
def run_logging(log_file: str, verbose: bool) -> Iterator[None]:
    """Sends detectron2's and ChimeraSeg's logs to ``log_file`` for one run (warnings, or
    everything with ``verbose``, also to the console); restores the loggers afterwards."""
    fmt = logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S")
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    file_handler, console = logging.FileHandler(log_file), logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in (file_handler, console):
            handler.setFormatter(fmt)
            logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(file_handler)
            logger.removeHandler(console)
            logger.setLevel(level)
            logger.propagate = propagate
        file_handler.close()


def delete_checkpoints(output_dir: str) -> None:
    """Removes the run's ``*.pth`` files and ``last_checkpoint`` (metrics and logs stay)."""
    for path in Path(output_dir).glob("*.pth"):
        path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (Path(output_dir) / "last_checkpoint").unlink()


def train_and_evaluate(cfg: Any) -> dict[str, float | None]:
    """Trains ``cfg`` (seeded) and evaluates it on ``DATASETS.TEST``.

    Returns:
        The evaluator's flat ``sem_seg`` metrics (NaN, e.g. the IoU of a class absent from the
        data, as None).
    """
    from detectron2.utils.env import seed_all_rng

    from chimeraseg.d2 import ChimeraSegTrainer

    seed_all_rng(cfg.SEED)  # weights, data order and augmentations (as default_setup does)
    trainer = ChimeraSegTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()  # the EvalHook's evaluation after the last iteration
    if not results:
        results = ChimeraSegTrainer.test(cfg, trainer.model)
    del trainer
    gc.collect()
    return {k: None if math.isnan(v) else float(v) for k, v in results["sem_seg"].items()}


def run_one(
    variant: Variant, seed: int, clip: ClipChoice, args: argparse.Namespace
) -> dict[str, Any]:
    """Trains and evaluates one (variant, seed); returns its ledger record (settings added later).

    The run directory is emptied first: a run missing from the ledger did not finish.
    """
    from chimeraseg.d2 import get_chimeraseg_cfg

    output_dir = os.path.join(args.work_dir, variant.name, f"seed{seed}")
    shutil.rmtree(output_dir, ignore_errors=True)
    opts = [*args.opts, *variant.opts, *clip.opts, "SEED", str(seed), "OUTPUT_DIR", output_dir]
    cfg = get_chimeraseg_cfg(args.config_file, opts)
    cfg.freeze()
    load, start = os.getloadavg()[0], time.perf_counter()
    with run_logging(os.path.join(output_dir, "log.txt"), args.verbose):
        metrics = train_and_evaluate(cfg)
    seconds = time.perf_counter() - start
    delete_checkpoints(output_dir)
    return {
        "variant": variant.name,
        "seed": seed,
        **{k: math.nan if metrics[k] is None else metrics[k] for k in (*METRICS, "mIoU")},
        "gamma": float(cfg.TEST.GAMMA),
        "metrics": metrics,
        "seconds": seconds,
        "iterations": int(cfg.SOLVER.MAX_ITER),
        "clip": clip.description,
        "variant_opts": list(variant.opts) + list(clip.opts),
        "output_dir": output_dir,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "load_average": load,
    }


# ---------------------------------------------------------------------------------- environment
def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """CPU model, logical cores and torch threads, e.g. ``AMD EPYC ..., 2 cores, 2 threads``."""
    import torch

    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def prepare_dataset(root: str) -> dict[str, int]:
    """Registers ``synthetic_zs_{train,val}`` under ``root`` and returns the image counts.

    A dataset there with non-default sizes (e.g. the tests' tiny one) is used as it is; otherwise
    the default dataset (48 train, 128 val images) is written unless already complete.
    """
    from chimeraseg.d2.data.register_synthetic_zs import register_all_synthetic_zs
    from chimeraseg.data.synthetic import DATASET_DIRNAME, make_synthetic_dataset

    meta_file = os.path.join(root, DATASET_DIRNAME, "meta.json")
    meta = json.loads(Path(meta_file).read_text()) if os.path.isfile(meta_file) else {}
    if meta.get("num_images") in (None, {"train": 48, "val": 128}):
        make_synthetic_dataset(root)
        meta = json.loads(Path(meta_file).read_text())
    register_all_synthetic_zs(root, replace=True)
    return {k: int(v) for k, v in meta["num_images"].items()}
