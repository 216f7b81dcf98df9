"""The checkpointer of ChimeraSeg and the loading of trained weights for evaluation and the demo.

Checkpoints carry the CLIP reference and the vocabulary (verified on load), are written atomically
and read without unpickling; ``--resume`` falls back from a last checkpoint that does not load. A
file with none (or, where required, not all) of the model's weights is refused. In training, each
checkpoint has one training-state file per rank beside it (:mod:`chimeraseg.d2.training_state`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.utils import comm
from torch import nn

from chimeraseg.d2.ddp import unwrap_model
from chimeraseg.d2.training_state import StateCheck, TrainingState, TrainingStateError
from chimeraseg.utils.checkpoint_io import (
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint_file,
    resume_candidates,
)

logger = logging.getLogger(__name__)

_BN_COUNTER = "num_batches_tracked"
# Key of ChimeraSeg's extra data in checkpoint files (CLIP reference + vocabulary).
CHECKPOINT_METADATA_KEY = "chimeraseg"


class WeightsMismatchError(ValueError):
    """A readable checkpoint whose weights do not fit (or are absent from) the model."""


class ChimeraSegCheckpointer(DetectionCheckpointer):
    """Saves the CLIP reference and vocabulary with the weights; verifies them on load.

    The model's ``state_dict`` holds only the student and CSH (frozen CLIP weights are referenced
    by name, tag/path and sha256, not stored). Loading a ChimeraSeg checkpoint into a model with
    different CLIP weights, a different vocabulary, missing keys or mismatched shapes raises.

    Files: checkpoints and the ``last_checkpoint`` tag are written atomically (temporary file,
    fsync, rename); reading uses ``torch.load(weights_only=True)`` only, and Python pickles
    (``.pkl``, which detectron2 would ``pickle.load``) are refused. A file that matches none of the
    model's weights is refused. ``--resume`` skips a last checkpoint that does not load, with a
    warning, and continues from the newest one that does.

    Args:
        model: the model (or DDP wrapper).
        save_dir: directory of the checkpoints and of ``last_checkpoint``.
        require_weights: every weight of the model must be in the loaded file (evaluation and the
            demo: a partly loaded model is a partly random model).
        kwargs: detectron2's ``save_to_disk`` and further checkpointables.
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, require_weights: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(model, save_dir, **kwargs)
        self.require_weights = require_weights
        # The trainer's per-rank training state (None: checkpoints hold no state files), and the
        # state of the checkpoint the last resume_or_load chose (None: none, or an old one).
        self.training_state: TrainingState | None = None
        self.loaded_training_state: dict[str, Any] | None = None
        self.resumed_from: str | None = None  # the checkpoint --resume chose

    def save(self, name: str, **kwargs: Any) -> None:
        """Writes ``<save_dir>/<name>.pth`` atomically, then tags it in ``last_checkpoint``.

        With :attr:`training_state` and an ``iteration`` keyword (detectron2's periodic and final
        checkpoints pass one), every rank first writes its ``<name>.rank{r}.state``, and the ranks
        meet at a barrier: the ``.pth`` exists only once every state file does. Then this is a
        collective call: every rank must make it.
        """
        if not self.save_dir:
            return
        path = os.path.join(self.save_dir, f"{name}.pth")
        iteration = kwargs.get("iteration")
        if self.training_state is not None and iteration is not None:
            self.training_state.write(path, iteration)
            comm.synchronize()
        if not self.save_to_disk:
            return
        model = unwrap_model(self.model)
        if hasattr(model, "checkpoint_metadata"):
            kwargs[CHECKPOINT_METADATA_KEY] = model.checkpoint_metadata()
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_torch_save(data, path)
        self.tag_last_checkpoint(os.path.basename(path))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Writes ``last_checkpoint`` atomically."""
        if self.save_to_disk:
            path = os.path.join(self.save_dir, "last_checkpoint")
            atomic_write_text(path, last_filename_basename)

    def _load_file(self, filename: str) -> dict[str, Any]:
        """Reads ``filename`` without running code from it (``.pkl`` refused)."""
        loaded = load_checkpoint_file(filename)
        return loaded if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint: Any) -> Any:
        """Verifies the metadata, loads, and refuses files without (all required) weights."""
        model = unwrap_model(self.model)
        metadata = checkpoint.pop(CHECKPOINT_METADATA_KEY, None)
        source = getattr(self, "_loading_path", "the checkpoint")
        if metadata is not None and hasattr(model, "verify_checkpoint_metadata"):
            model.verify_checkpoint_metadata(metadata, source=source)
        elif hasattr(model, "verify_checkpoint_metadata"):
            logger.warning("%s has no ChimeraSeg metadata; CLIP/vocabulary not verified", source)
        incompatible = super()._load_model(checkpoint)
        # Frozen CLIP copies are absent from checkpoints by design; only keys the model's own
        # state_dict() reports are required.
        expected = set(model.state_dict())
        reshaped = {k for k, _, _ in incompatible.incorrect_shapes}
        missing = [k for k in incompatible.missing_keys if k in expected and k not in reshaped]
        # BatchNorm fills an absent num_batches_tracked itself: not evidence of a match.
        matched = {k for k in expected - set(missing) - reshaped if not k.endswith(_BN_COUNTER)}
        if expected and not matched:
            raise WeightsMismatchError(
                f"'{source}' holds no ChimeraSeg weights: none of the model's {len(expected)} "
                "weights is in it. MODEL.WEIGHTS must be a checkpoint written by ChimeraSeg "
                "(an ImageNet backbone checkpoint goes to MODEL.CHIMERASEG.BACKBONE.PRETRAINED)"
            )
        if metadata is not None or self.require_weights:
            _check_complete(source, missing, incompatible.incorrect_shapes, self.require_weights)
        return incompatible

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """detectron2's ``load``; a missing local file raises :class:`CheckpointError` naming it."""
        self._loading_path = path
        if path and "://" not in path and not os.path.isfile(path):
            raise CheckpointError(f"checkpoint file '{path}' does not exist")
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None  # detectron2 asserts None at the next load

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """detectron2's ``resume_or_load``, falling back from a last checkpoint that does not load.

        With ``resume`` and a ``last_checkpoint`` tag, the tagged file is loaded; if it cannot be
        read (truncated, corrupt, missing), or (with :attr:`training_state`) a rank's state file
        of it is missing or unreadable, a warning names it and the newest other checkpoint of
        ``save_dir`` that loads is used (and tagged). The ranks agree on the checkpoint (one
        gather per candidate), and :attr:`loaded_training_state` holds this rank's state of it.
        Otherwise ``path`` (``MODEL.WEIGHTS``) is loaded without the optimizer / scheduler state.

        Raises:
            CheckpointError: when no checkpoint of ``save_dir`` loads, naming each failure.
            TrainingStateError: when a readable state file belongs to another training stream
                (another dataset, batch size or number of processes).
        """
        self.loaded_training_state = self.resumed_from = None
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        failures: list[str] = []
        for candidate in resume_candidates(self.save_dir, self.get_checkpoint_file()):
            try:
                result = self.load(candidate)
                check, state = self._read_training_state(candidate, result)
            except CheckpointError as e:
                result, check, state = {}, StateCheck("unreadable", str(e)), None
            problem = self._agreed_problem(check, candidate)
            if problem:
                logger.warning("--resume: %s; trying the previous checkpoint", problem)
                failures.append(problem)
                continue
            if failures:
                logger.warning("--resume: continuing from %s", candidate)
                self.tag_last_checkpoint(os.path.basename(candidate))
            self.loaded_training_state, self.resumed_from = state, candidate
            return result
        raise CheckpointError(f"--resume: no checkpoint in {self.save_dir} loads: {failures}")

    def _read_training_state(
        self, candidate: str, loaded: dict[str, Any]
    ) -> tuple[StateCheck, dict[str, Any] | None]:
        """This rank's verdict on the state file of ``candidate`` (loaded as ``loaded``)."""
        if self.training_state is None:
            return StateCheck("ok"), None
        if loaded.get("iteration") is None:
            return StateCheck("absent", f"'{candidate}' records no iteration"), None
        return self.training_state.read(candidate, int(loaded["iteration"]))

    def _agreed_problem(self, check: StateCheck, candidate: str) -> str:
        """Gathers every rank's :class:`StateCheck` of ``candidate``; "" when it can be used.

        Raises:
            TrainingStateError: the first rank's message when a state belongs to another stream.
        """
        if self.training_state is None:
            return check.message if check.kind != "ok" else ""
        checks = comm.all_gather(check)
        mismatch = next((c for c in checks if c.kind == "mismatch"), None)
        if mismatch is not None:
            raise TrainingStateError(mismatch.message)
        on_rank = {r: f"rank {r}: " if len(checks) > 1 else "" for r in range(len(checks))}
        for rank, c in enumerate(checks):
            if c.kind == "unreadable":
                return f"{on_rank[rank]}{c.message}"
        absent = [rank for rank, c in enumerate(checks) if c.kind == "absent"]
        if absent and len(absent) < len(checks):
            return f"{on_rank[absent[0]]}training state missing: {checks[absent[0]].message}"
        if absent and comm.is_main_process():
            logger.warning(
                "--resume: '%s' has no training-state files (written before exact resume, or "
                "without an iteration): the data stream continues at its iteration, but the RNGs "
                "start afresh, so the resumed run differs from an uninterrupted one",
                candidate,
            )
        return ""


def _check_complete(
    source: str, missing: list[str], incorrect_shapes: list[Any], required: bool
) -> None:
    """Raises :class:`WeightsMismatchError` naming ``source`` for missing or reshaped weights."""
    problems = missing + [
        f"{k} (checkpoint {tuple(a)} vs model {tuple(b)})" for k, a, b in incorrect_shapes
    ]
    if not problems:
        return
    hint = (
        " (MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS True allows an untrained student, smoke tests "
        "only)"
        if required
        else " (is it a checkpoint of another config?)"
    )
    raise WeightsMismatchError(
        f"'{source}' does not match the model built from the config: {len(problems)} weights "
        f"missing or of another shape, e.g. {problems[:10]}{hint}"
    )


def load_trained_weights(model: nn.Module, cfg: CfgNode, resume: bool = False) -> None:
    """Loads trained weights for evaluation or the demo; refuses to use an untrained student.

    The weights come from the last checkpoint of ``OUTPUT_DIR`` (``resume``) or from
    ``MODEL.WEIGHTS``; every weight of the model must be in the file. Without weights, or with a
    partial file, this raises unless ``MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS`` (then it warns).

    Raises:
        CheckpointError: naming the key MODEL.WEIGHTS when it is empty, or an unreadable file.
        WeightsMismatchError: naming the file when it lacks weights of the model.
    """
    allow = cfg.MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS
    checkpointer = ChimeraSegCheckpointer(model, cfg.OUTPUT_DIR, require_weights=not allow)
    if cfg.MODEL.WEIGHTS or (resume and checkpointer.has_checkpoint()):
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        return
    if not allow:
        raise CheckpointError(
            "MODEL.WEIGHTS is empty: evaluating or drawing now would use an untrained (random) "
            "student. Pass MODEL.WEIGHTS <checkpoint.pth> (or set "
            "MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS True for a smoke test)"
        )
    logger.warning(
        "MODEL.WEIGHTS is empty and MODEL.CHIMERASEG.ALLOW_RANDOM_WEIGHTS is True: the student "
        "has RANDOM weights; its results are meaningless"
    )


def check_start_iteration(start_iter: int, max_iter: int, output_dir: str) -> None:
    """Refuses a resumed run whose checkpoint lies past ``SOLVER.MAX_ITER``.

    detectron2 would run no iteration, evaluate and exit 0, as if a training of ``max_iter``
    iterations had just finished; the checkpoint comes from a longer run.

    Args:
        start_iter: the first iteration to run (the checkpoint's iteration + 1).
        max_iter: ``SOLVER.MAX_ITER``.
        output_dir: ``OUTPUT_DIR`` (named in the message).

    Raises:
        CheckpointError: naming both iterations and what to do.
    """
    if start_iter > max_iter:
        raise CheckpointError(
            f"--resume: the checkpoint in {output_dir} is at iteration {start_iter - 1}, past "
            f"SOLVER.MAX_ITER = {max_iter}, so nothing would be trained. Raise SOLVER.MAX_ITER "
            "to continue that run, use another OUTPUT_DIR for a new one, or evaluate it with "
            "--eval-only"
        )
