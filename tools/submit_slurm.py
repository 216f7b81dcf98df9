#!/usr/bin/env python
"""Submit tools/train_net.py to SLURM through submitit: one task per GPU, requeued on preemption.

Examples::

    # 2 nodes x 8 GPUs, COCO-Stuff 156/15 MiT-B4, 24 h per allocation, requeued until done
    python tools/submit_slurm.py --nodes 2 --gpus-per-node 8 --partition gpu --time 1440 \\
        --account myproj --qos normal --job-name cs-mitb4 --output output/slurm/cs-mitb4 \\
        --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml \\
        MODEL.CLIP.PRETRAINED /path/to/ViT-B-16.pt OUTPUT_DIR output/cs-mitb4

    # extra sbatch options (repeatable), e.g. a constraint and a memory request
    python tools/submit_slurm.py --sbatch constraint=a100 --sbatch mem=400G ...

    # the same job as local processes (submitit's local executor; tries the requeue on one machine)
    python tools/submit_slurm.py --cluster local --gpus-per-node 2 --time 30 \\
        --config-file <cfg> MODEL.DEVICE cpu

Every task reads its rank from SLURM's environment and joins one process group; a preemption or
the time limit (submitit's signal, ``--signal-delay-s`` before it) writes a checkpoint of the
current iteration and requeues the job, which resumes from it (``--resume`` implied). The
``--config-file`` and ``KEY VALUE`` overrides are train_net.py's (docs/CLUSTER.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any

from chimeraseg.utils.tool_parser import tool_parser

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")


def get_parser() -> argparse.ArgumentParser:
    """The command line: SLURM resources, then train_net.py's config and overrides."""
    p = tool_parser(
        __doc__.splitlines()[1],
        (
            "python tools/submit_slurm.py --nodes 2 --gpus-per-node 8 --partition gpu "
            "--time 1440 --config-file configs/coco-stuff-164k-156/chimeraseg_mitb4_80k.yaml",
        ),
    )
    slurm = p.add_argument_group("SLURM")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    slurm.add_argument(
        "--gpus-per-node",
        type=int,
        default=8,
        help="GPUs per node = training tasks per node (default 8)",
    )
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument(
        "--time",
        type=int,
        default=1440,
        help="time limit of one allocation, in minutes (default 1440)",
    )
    slurm.add_argument("--account", help="SLURM account")
    slurm.add_argument("--qos", help="SLURM quality of service")
    slurm.add_argument("--cpus-per-task", type=int, default=10, help="CPUs per GPU (default 10)")
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra sbatch option (repeatable), e.g. constraint=a100",
    )
    slurm.add_argument("--job-name", default="chimeraseg", help="job name (default chimeraseg)")
    slurm.add_argument(
        "--output",
        default=os.path.join("output", "slurm"),
        metavar="DIR",
        help="folder of submitit's logs and job files (default output/slurm)",
    )
    slurm.add_argument(
        "--signal-delay-s",
        type=int,
        default=120,
        help="seconds before the time limit when the job is signalled to "
        "checkpoint and requeue (default 120)",
    )
    slurm.add_argument(
        "--max-timeouts",
        type=int,
        default=20,
        help="how often the job may hit its time limit and be requeued",
    )
    slurm.add_argument(
        "--master-port",
        type=int,
        help="rendezvous port on the first node (default: from the job id)",
    )
    slurm.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="'local': run the tasks as local processes (submitit's local executor, one node)",
    )
    train = p.add_argument_group("training (as tools/train_net.py)")
    train.add_argument("--config-file", required=True, metavar="FILE", help="config file")
    train.add_argument(
        "--resume",
        action="store_true",
        help="resume from OUTPUT_DIR's last checkpoint (implied after a requeue)",
    )
    train.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def parse_sbatch_options(items: list[str]) -> dict[str, str]:
    """``["constraint=a100", "mem=400G"]`` -> ``{"constraint": "a100", "mem": "400G"}``.

    Raises:
        ValueError: naming ``--sbatch`` and an item without ``=``.
    """
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. constraint=a100")
        options[key.strip().lstrip("-")] = value
    return options


def train_net_args(args: argparse.Namespace) -> argparse.Namespace:
    """train_net.py's arguments for ``--config-file``, ``--resume`` and the overrides."""
    from detectron2.engine import default_argument_parser

    argv = ["--config-file", args.config_file, *(["--resume"] if args.resume else []), *args.opts]
    return default_argument_parser().parse_args(argv)


def build_executor(args: argparse.Namespace) -> Any:
    """submitit's SLURM (or local) executor with one task per GPU."""
    import submitit
    import torch

    if args.cluster == "local":
        if args.nodes != 1:
            raise ValueError(f"--cluster local runs on one node, got --nodes {args.nodes}")
        executor = submitit.LocalExecutor(folder=args.output, max_num_timeout=args.max_timeouts)
        gpus = min(args.gpus_per_node, torch.cuda.device_count())
        executor.update_parameters(
            timeout_min=args.time,
            tasks_per_node=args.gpus_per_node,
            gpus_per_node=gpus,
            signal_delay_s=args.signal_delay_s,
        )
        return executor
    if shutil.which("srun") is None:
        raise ValueError(
            "--cluster slurm: srun is not on PATH; submit from a SLURM login node "
            "(or try the job locally with --cluster local)"
        )
    executor = submitit.SlurmExecutor(folder=args.output, max_num_timeout=args.max_timeouts)
    optional = {"partition": args.partition, "account": args.account, "qos": args.qos}
    executor.update_parameters(
        job_name=args.job_name,
        nodes=args.nodes,
        ntasks_per_node=args.gpus_per_node,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        signal_delay_s=args.signal_delay_s,
        additional_parameters=parse_sbatch_options(args.sbatch),
        **{key: value for key, value in optional.items() if value},
    )
    return executor


def submit(argv: list[str] | None = None) -> Any:
    """Parses ``argv``, checks the config, submits the job; returns submitit's job."""
    from chimeraseg.d2.launch import cluster_settings_of
    from chimeraseg.d2.submitit_job import TrainingJob

    args = get_parser().parse_args(argv)
    if args.gpus_per_node < 1 or args.nodes < 1 or args.time < 1:
        raise ValueError("--nodes, --gpus-per-node and --time must be >= 1")
    train_args = train_net_args(args)
    cluster_settings_of(train_args)  # a bad config or override is refused before submitting
    executor = build_executor(args)
    job = executor.submit(TrainingJob(TRAIN_NET, train_args, args.master_port))
    print(
        f"submitted job {job.job_id}: {args.nodes} node(s) x {args.gpus_per_node} task(s); "
        f"logs in {os.path.abspath(args.output)}"
    )
    return job


def main() -> None:
    """Entry point of ``python tools/submit_slurm.py``."""
    submit(sys.argv[1:])


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/submit_slurm.py")
