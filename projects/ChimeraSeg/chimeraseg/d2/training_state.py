"""Per-rank training state beside each checkpoint: the data stream's position and every RNG.

``model_0004999.pth`` (rank 0) has one ``model_0004999.rank{r}.state`` per process, written
atomically before it (docs/CLUSTER.md, 'What a resume guarantees'). A state file holds plain
tensors and containers (read with ``weights_only=True``):

- ``iteration``: the checkpoint's iteration ``i`` (the resumed stream starts with batch ``i + 1``);
- ``stream``: the :class:`~chimeraseg.d2.data.resumable.StreamInfo` it was written for (dataset,
  its size and fingerprint, seed, number of processes, images per process);
- ``rng``: Python's, NumPy's and torch's global RNG states, the current CUDA device's, and the
  Gumbel-noise generators of SGD (:meth:`SGDLoss.generator_states`);
- ``config``: the run's config (YAML), compared on resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import yaml
from detectron2.config import CfgNode
from detectron2.utils import comm
from torch import nn

from chimeraseg.d2.data.resumable import TrainingStream
from chimeraseg.modeling.losses.selective_global_distillation import SGDLoss
from chimeraseg.utils.checkpoint_io import CheckpointError, atomic_torch_save, read_weights_file

__all__ = [
    "STATE_FORMAT",
    "StateCheck",
    "TrainingState",
    "TrainingStateError",
    "capture_global_rng",
    "config_differences",
    "preserved_global_rng",
    "restore_global_rng",
    "state_file",
]

logger = logging.getLogger(__name__)

# Version of the state-file layout.
STATE_FORMAT = 1
_STATE_SUFFIX = ".state"
_SHOWN_DIFFERENCES = 8  # config keys named in the resume warning
# Keys that may change on a resume without changing the run (the stream does not depend on the
# worker count; a moved OUTPUT_DIR is the same run).
_RUN_NEUTRAL_KEYS = frozenset({"DATALOADER.NUM_WORKERS", "OUTPUT_DIR"})


class TrainingStateError(CheckpointError):
    """A training-state file does not fit the run resuming from it (the message says why)."""


def state_file(checkpoint: str, rank: int) -> str:
    """``<dir>/model_0004999.pth`` -> ``<dir>/model_0004999.rank{rank}.state``."""
    return f"{os.path.splitext(checkpoint)[0]}.rank{rank}{_STATE_SUFFIX}"


def capture_global_rng() -> dict[str, Any]:
    """Python's, NumPy's, torch's CPU and (when initialised) the current CUDA device's states."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state()
    return {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),  # (624,) MT19937 words
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def restore_global_rng(states: dict[str, Any]) -> None:
    """Sets the RNGs of :func:`capture_global_rng` (CUDA only where it was saved and exists)."""
    python = states["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        ("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached"])
    )
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Runs the block (e.g. an evaluation) without changing the global RNG states after it."""
    states = capture_global_rng()
    try:
        yield
    finally:
        restore_global_rng(states)


def _sgd_losses(model: nn.Module) -> list[SGDLoss]:
    return [m for m in model.modules() if isinstance(m, SGDLoss)]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(saved_yaml: str, cfg: CfgNode) -> list[str]:
    """``KEY: saved -> now`` for every config key whose value differs (sorted), except the keys
    that do not change the run (``DATALOADER.NUM_WORKERS``, ``OUTPUT_DIR``)."""
    saved, now = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(yaml.safe_load(cfg.dump()))
    return [
        f"{key}: {saved.get(key, '(absent)')!r} -> {now.get(key, '(absent)')!r}"
        for key in sorted((set(saved) | set(now)) - _RUN_NEUTRAL_KEYS)
        if saved.get(key, "(absent)") != now.get(key, "(absent)")
    ]


@dataclass(frozen=True)
class StateCheck:
    """One rank's verdict on a checkpoint's state file (gathered from every rank).

    Attributes:
        kind: ``"ok"``, ``"absent"`` (no state file), ``"unreadable"`` (truncated, corrupt,
            missing keys) or ``"mismatch"`` (a readable state of another stream).
        message: one line naming the file and the reason (empty for ``"ok"``).
    """

    kind: str
    message: str = ""


class TrainingState:
    """Writes, checks and restores this rank's training state for the trainer's checkpointer.

    Args:
        model: the trained model (or its DDP wrapper); its :class:`SGDLoss` generators are saved.
        stream: the training stream.
        cfg: the run's config.
    """

    def __init__(self, model: nn.Module, stream: TrainingStream, cfg: CfgNode) -> None:
        self.model, self.stream, self.cfg = model, stream, cfg
        self.rank = comm.get_rank()

    def snapshot(self, iteration: int) -> dict[str, Any]:
        """This rank's state after ``iteration`` has finished."""
        rng = capture_global_rng()
        rng["gumbel"] = [loss.generator_states() for loss in _sgd_losses(self.model)]
        return {
            "format": STATE_FORMAT,
            "iteration": int(iteration),
            "rank": self.rank,
            "stream": self.stream.info.as_dict(),
            "rng": rng,
            "config": self.cfg.dump(),
        }

    def write(self, checkpoint: str, iteration: int) -> None:
        """Writes this rank's state file of ``checkpoint`` (atomically)."""
        atomic_torch_save(self.snapshot(iteration), state_file(checkpoint, self.rank))

    def read(self, checkpoint: str, iteration: int) -> tuple[StateCheck, dict[str, Any] | None]:
        """Reads and checks this rank's state file of ``checkpoint`` at ``iteration``."""
        path = state_file(checkpoint, self.rank)
        if not os.path.exists(path):
            return StateCheck("absent", f"'{path}' does not exist"), None
        try:
            state = read_weights_file(path, "training-state file", "it is skipped")
            problem = _layout_problem(state, self.rank, iteration)
        except CheckpointError as e:
            return StateCheck("unreadable", str(e)), None
        if problem:
            return StateCheck("unreadable", f"'{path}' is not a valid training-state file: "
                              f"{problem}"), None  # fmt: skip
        mismatch = self._stream_mismatch(state["stream"])
        if mismatch:
            return StateCheck("mismatch", f"--resume: '{path}' {mismatch}"), None
        return StateCheck("ok"), state

    def _stream_mismatch(self, saved: dict[str, Any]) -> str:
        """Why a saved stream cannot continue as this run's stream ("" when it can)."""
        now = self.stream.info.as_dict()
        keys = ("datasets", "dataset_size", "dataset_fingerprint", "world_size", "batch_size")
        changed = [
            f"{k} {_shown(k, saved[k])} -> {_shown(k, now[k])}" for k in keys if saved[k] != now[k]
        ]
        if not changed:
            return ""
        return (
            f"belongs to another training stream ({', '.join(changed)}): resume with the "
            "DATASETS.TRAIN, SOLVER.IMS_PER_BATCH and number of processes it was written with, "
            "or start a new OUTPUT_DIR with MODEL.WEIGHTS set to its checkpoint"
        )

    def restore(self, state: dict[str, Any], source: str) -> None:
        """Restores the RNGs and the stream's seed and position; warns about config changes.

        Args:
            state: a state :meth:`read` accepted.
            source: the checkpoint file (named in the warning).
        """
        rng = state["rng"]
        restore_global_rng(rng)
        losses = _sgd_losses(self.model)
        if len(rng["gumbel"]) != len(losses):
            raise TrainingStateError(
                f"--resume: '{source}' holds {len(rng['gumbel'])} Gumbel generators, the model "
                f"has {len(losses)} SGD losses (another MODEL.CHIMERASEG.LOSSES?)"
            )
        for loss, generators in zip(losses, rng["gumbel"], strict=True):
            loss.set_generator_states(generators)
        self.stream.restore(state["stream"]["seed"], state["iteration"] + 1)
        differences = config_differences(state["config"], self.cfg)
        if differences and comm.is_main_process():
            shown = "; ".join(differences[:_SHOWN_DIFFERENCES])
            more = len(differences) - _SHOWN_DIFFERENCES
            shown += f"; and {more} more" if more > 0 else ""
            logger.warning(
                f"--resume: the config differs from the one '{source}' was written with "
                f"({shown}): the resumed run is not the run it continues"
            )


def _shown(key: str, value: Any) -> str:
    """A stream value as the refusal names it (fingerprints shortened to 12 hex digits)."""
    return value[:12] if key == "dataset_fingerprint" else repr(value)


def _layout_problem(state: Any, rank: int, iteration: int) -> str:
    """What is wrong with a loaded state's layout ("" when nothing)."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        return f"no format {STATE_FORMAT} state"
    missing = [k for k in ("iteration", "rank", "stream", "rng", "config") if k not in state]
    if missing:
        return f"keys {missing} are missing"
    if state["rank"] != rank:
        return f"it belongs to rank {state['rank']}, not {rank}"
    if state["iteration"] != iteration:
        return f"it is of iteration {state['iteration']}, its checkpoint of {iteration}"
    stream_keys = ("datasets", "dataset_size", "dataset_fingerprint", "seed", "world_size",
                   "batch_size")  # fmt: skip
    if not isinstance(state["stream"], dict) or any(k not in state["stream"] for k in stream_keys):
        return "its stream description is incomplete"
    rng_keys = ("python", "numpy", "torch", "cuda", "gumbel")
    if not isinstance(state["rng"], dict) or any(k not in state["rng"] for k in rng_keys):
        return "its RNG states are incomplete"
    return ""
