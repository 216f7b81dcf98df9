"""Train the world CLIP once per machine: a cache keyed by everything the weights depend on.

Layout: ``<cache>/world_clip/<key>/`` holds ``<model>.pt`` (a plain open_clip state dict, loaded
by :func:`chimeraseg.clip.loading.load_clip` like any CLIP checkpoint) and ``report.json`` (the
training config, the quality gate's numbers, timing). ``key`` hashes the generator's format
version, the training config (seed and steps included) and the model-config JSON's content, so
changing any of them trains a new CLIP. The cache directory is ``$CHIMERASEG_CACHE``, else
``$XDG_CACHE_HOME/chimeraseg``, else ``~/.cache/chimeraseg``
(:func:`chimeraseg.utils.user_cache.default_cache_dir`).

Concurrent callers (several processes of one launch) serialise on a lock file; the first trains,
the others then find the finished entry. Files appear atomically (temporary name, then rename).
A cached entry is used only when its weights read back (and match the checksum its report
records); a damaged one is an error giving the ``tools/train_world_clip.py --retrain`` command.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from chimeraseg.clip.loading import model_config_path
from chimeraseg.data.synthetic import FORMAT_VERSION as GENERATOR_FORMAT_VERSION
from chimeraseg.utils.checkpoint_io import (
    atomic_torch_save,
    atomic_write_text,
    read_weights_file,
)
from chimeraseg.utils.user_cache import default_cache_dir
from chimeraseg.world.clip_training import (
    WORLD_CLIP_MODEL_CONFIG,
    WorldClipConfig,
    WorldClipQualityError,
    gate_message,
    train_world_clip,
    zero_shot_report,
)

__all__ = [
    "WorldClip",
    "WorldClipCacheError",
    "default_cache_dir",
    "ensure_world_clip",
    "is_world_clip",
    "retrain_advice",
    "world_clip_for",
    "world_clip_key",
]

logger = logging.getLogger(__name__)
CACHE_FORMAT_VERSION = 1


class WorldClipCacheError(RuntimeError):
    """A cached world CLIP is damaged or the cache cannot be used; the message says what to run."""


@dataclass(frozen=True)
class WorldClip:
    """A trained, gate-checked world CLIP on disk.

    Attributes:
        model_config: the model-config JSON (``MODEL.CLIP.NAME``).
        checkpoint: the weights file (``MODEL.CLIP.PRETRAINED``).
        report: ``report.json``'s content (config, gate numbers, training time).
        trained_now: True when this call trained it, False when it came from the cache.
    """

    model_config: Path
    checkpoint: Path
    report: dict
    trained_now: bool


def world_clip_key(config: WorldClipConfig) -> str:
    """Hex key (24 characters) of the generator format, the config and the model JSON's bytes."""
    payload = {
        "cache_format": CACHE_FORMAT_VERSION,
        "generator_format": GENERATOR_FORMAT_VERSION,
        "config": config.as_dict(),
        "model_config_sha256": hashlib.sha256(
            model_config_path(config.model_config).read_bytes()
        ).hexdigest(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def retrain_advice(config: WorldClipConfig) -> str:
    """The command that trains the cached world CLIP of ``config`` again."""
    return f"run `python tools/train_world_clip.py --classes {config.classes} --retrain`"


def _check_checkpoint(checkpoint: Path, report: dict, config: WorldClipConfig) -> None:
    """Raises :class:`WorldClipCacheError` unless the cached weights read back completely."""
    advice = f"the cache entry is damaged; {retrain_advice(config)}"
    expected = report.get("checkpoint_sha256")
    if expected and hashlib.sha256(checkpoint.read_bytes()).hexdigest() != expected:
        raise WorldClipCacheError(
            f"cached world CLIP '{checkpoint}' does not match the checksum its report.json "
            f"records (changed or truncated after it was written); {advice}"
        )
    state = read_weights_file(checkpoint, "world CLIP checkpoint", advice, WorldClipCacheError)
    if not isinstance(state, dict) or not state:
        raise WorldClipCacheError(f"cached world CLIP '{checkpoint}' holds no state dict; {advice}")


def _cached(entry: Path, checkpoint: Path, config: WorldClipConfig) -> dict | None:
    """The entry's report if it is complete, was made from ``config`` and passed the gate.

    Raises:
        WorldClipCacheError: the entry is complete on paper but its weights do not read back.
    """
    report_file = entry / "report.json"
    if not (checkpoint.is_file() and report_file.is_file()):
        return None
    try:
        report = json.loads(report_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = report.get("config") == config.as_dict() and report.get("gate", {}).get("passed")
    if not ok:
        return None
    _check_checkpoint(checkpoint, report, config)
    return report


def ensure_world_clip(
    config: WorldClipConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> WorldClip:
    """Returns the cached world CLIP for ``config``, training and gate-checking it if needed.

    A complete entry is used without writing anything (a read-only cache works); the lock file
    is opened only to train.

    Args:
        config: What to train (defaults: the world CLIP of ``make demo``).
        cache_dir: Cache root (default :func:`default_cache_dir`).
        progress: Progress bar while training.
        retrain: Train again even when a cached entry exists.

    Returns:
        The :class:`WorldClip`.

    Raises:
        WorldClipQualityError: the trained CLIP missed the gate (the message names the classes);
            nothing is cached then.
        WorldClipCacheError: a cached entry whose weights do not read back (the message gives
            the ``--retrain`` command), or a cache that cannot be written when training is needed.
    """
    config = config or WorldClipConfig()
    model_config = model_config_path(config.model_config)
    entry = Path(cache_dir or default_cache_dir()).expanduser() / "world_clip"
    entry = entry / world_clip_key(config)
    checkpoint = entry / f"{model_config.stem}.pt"
    report = None if retrain else _cached(entry, checkpoint, config)
    if report is not None:
        return WorldClip(model_config, checkpoint, report, trained_now=False)
    try:
        entry.mkdir(parents=True, exist_ok=True)
        lock = open(entry / ".lock", "w")  # noqa: SIM115 -- closed by the with below
    except OSError as e:
        raise WorldClipCacheError(
            f"the world CLIP must be trained, but its cache folder '{entry}' cannot be written "
            f"({e.strerror}); set CHIMERASEG_CACHE to a writable folder"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one trainer per entry; released on close
        report = None if retrain else _cached(entry, checkpoint, config)  # another process's
        if report is not None:
            return WorldClip(model_config, checkpoint, report, trained_now=False)
        report = _train_and_save(config, checkpoint, progress)
    return WorldClip(model_config, checkpoint, report, trained_now=True)


def _train_and_save(config: WorldClipConfig, checkpoint: Path, progress: bool) -> dict:
    """Trains and gate-checks the CLIP, writes its weights and ``report.json``; returns it."""
    model, info = train_world_clip(config, progress=progress)
    gate = zero_shot_report(model, config)
    message = gate_message(gate, config)
    if not gate["passed"]:
        raise WorldClipQualityError(f"world CLIP ({config.classes}) failed its gate: {message}")
    logger.info("world CLIP (%s): %s", config.classes, message)
    atomic_torch_save(model.state_dict(), checkpoint)
    report = {
        "config": config.as_dict(),
        "training": info,
        "gate": gate,
        "message": message,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
    }
    atomic_write_text(checkpoint.parent / "report.json", json.dumps(report, indent=2))
    return report


def is_world_clip(name: str) -> bool:
    """Whether a CLIP model name (``MODEL.CLIP.NAME``) is the synthetic world's model config."""
    return os.path.basename(name) == os.path.basename(WORLD_CLIP_MODEL_CONFIG)


def world_clip_for(name: str, pretrained: str) -> WorldClip | None:
    """The world CLIP's weights for a config naming the world model without weights, else None.

    Trained on first use and cached (:func:`ensure_world_clip`), so a config whose
    ``MODEL.CLIP.NAME`` is the world model needs no ``MODEL.CLIP.PRETRAINED``.

    Raises:
        WorldClipQualityError: a newly trained CLIP missed its gate.
    """
    if not is_world_clip(name) or pretrained:
        return None
    return ensure_world_clip(WorldClipConfig(model_config=name))
