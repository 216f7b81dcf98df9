"""The resumable training stream: a pure function of (seed, rank, world size, position).

detectron2's :class:`~detectron2.data.samplers.TrainingSampler` gives an infinite shuffled stream
of dataset indices that the ranks share out (rank ``r`` of ``W`` takes the global positions
``r, r + W, r + 2W, ...``). :class:`ResumableTrainingSampler` is that very stream, started after
the samples a rank has already consumed, and it tags every index with its global position.
:class:`PositionSeededSamples` maps a sample with the global NumPy and Python RNGs seeded from
``(seed, global position)`` (the augmentations of detectron2 draw from the global NumPy RNG), so
the crops, flips and colour jitter of a sample do not depend on which loader worker maps it, nor
on what that worker mapped before. Batches are the stream in order (no aspect-ratio grouping:
training images are cropped / padded to ``INPUT.CROP.SIZE``).

So the batches of iteration ``i`` follow from the seed and ``i`` alone; resuming at iteration
``i`` means starting the stream at ``i * per-rank batch`` (:meth:`TrainingStream.start_at`),
whatever the workers had prefetched when the run was stopped.
"""

# ruff: noqa: NPY002 -- detectron2's augmentations draw from the global NumPy RNG, which is seeded
# per sample here.
from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import DatasetFromList, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "PositionSeededSamples",
    "ResumableTrainingSampler",
    "StreamInfo",
    "TrainingStream",
    "build_resumable_train_loader",
    "dataset_fingerprint",
    "seeded_sample_rng",
]

# The only sampler whose stream is a function of the seed and the position.
_SAMPLER = "TrainingSampler"


@dataclass(frozen=True)
class StreamInfo:
    """What identifies a training stream; a resume must find the same values.

    Attributes:
        datasets: ``DATASETS.TRAIN``.
        dataset_size: number of training samples.
        dataset_fingerprint: :func:`dataset_fingerprint` of the samples, in order.
        seed: the stream's seed (shuffle order and per-sample augmentation seeds).
        world_size: number of processes sharing the stream.
        batch_size: images per process and iteration (``SOLVER.IMS_PER_BATCH / world_size``).
    """

    datasets: tuple[str, ...]
    dataset_size: int
    dataset_fingerprint: str
    seed: int
    world_size: int
    batch_size: int

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, ints, strings) for a ``weights_only`` state file."""
        return {
            "datasets": list(self.datasets),
            "dataset_size": self.dataset_size,
            "dataset_fingerprint": self.dataset_fingerprint,
            "seed": self.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
        }


def dataset_fingerprint(dicts: Sequence[dict[str, Any]]) -> str:
    """sha256 of the samples' image and label file names (base names, in order).

    Base names, so that a dataset moved to another root (another ``DETECTRON2_DATASETS`` after a
    requeue) keeps its fingerprint; another dataset, subset or order changes it.
    """
    digest = hashlib.sha256()
    for record in dicts:
        names = (record.get("file_name", ""), record.get("sem_seg_file_name", ""))
        digest.update("\t".join(os.path.basename(str(n)) for n in names).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@contextlib.contextmanager
def seeded_sample_rng(seed: int, position: int) -> Iterator[None]:
    """Seeds the global NumPy and Python RNGs from ``(seed, position)``; restores them after.

    Args:
        seed: the stream's seed.
        position: the sample's global position in the stream.
    """
    entropy = np.random.SeedSequence([seed % 2**32, position]).generate_state(2)  # (2,) uint32
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(entropy)
    random.seed(int(entropy[0]) << 32 | int(entropy[1]))
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's ``TrainingSampler`` stream from a per-rank start; yields (position, index).

    Args:
        size: number of samples of the dataset.
        seed: the shuffle seed (same on every rank).
        shuffle: shuffle each pass over the dataset.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0  # samples this rank has consumed

    @property
    def seed(self) -> int:
        """The shuffle seed."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = int(value)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(global position, dataset index)`` of this rank's samples from :attr:`start` on."""
        first = self.start * self._world_size + self._rank
        indices = itertools.islice(self._infinite_indices(), first, None, self._world_size)
        for k, index in enumerate(indices):
            yield first + k * self._world_size, index


class PositionSeededSamples(Dataset):
    """Maps ``(position, index)`` to ``mapper(dicts[index])`` under :func:`seeded_sample_rng`.

    Args:
        dicts: detectron2 dataset dicts.
        mapper: the training mapper.
        seed: the stream's seed.
    """

    def __init__(
        self, dicts: Sequence[dict[str, Any]], mapper: Callable[[dict], dict], seed: int
    ) -> None:
        self._dicts = DatasetFromList(list(dicts), copy=False)
        self._mapper, self.seed = mapper, seed

    def __len__(self) -> int:
        return len(self._dicts)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        position, index = item
        with seeded_sample_rng(self.seed, position):
            return self._mapper(self._dicts[index])


class TrainingStream:
    """The training loader plus what a checkpoint records of it.

    Iterating it iterates the ``DataLoader`` (lists of mapped dicts, one list per iteration).

    Args:
        loader: the batched ``DataLoader`` over ``samples``.
        sampler: its :class:`ResumableTrainingSampler`.
        samples: its :class:`PositionSeededSamples`.
        info: the stream's :class:`StreamInfo`.
    """

    def __init__(
        self,
        loader: DataLoader,
        sampler: ResumableTrainingSampler,
        samples: PositionSeededSamples,
        info: StreamInfo,
    ) -> None:
        self.loader, self.sampler, self.samples, self.info = loader, sampler, samples, info

    def start_at(self, iteration: int) -> None:
        """Makes the next ``iter()`` start with the batch of ``iteration`` (call before it)."""
        self.sampler.start = iteration * self.info.batch_size

    def restore(self, seed: int, iteration: int) -> None:
        """Continues a saved stream: its ``seed``, from the batch of ``iteration`` on."""
        self.sampler.seed = self.samples.seed = seed
        self.info = replace(self.info, seed=seed)
        self.start_at(iteration)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        return iter(self.loader)


def stream_seed(cfg: CfgNode) -> int:
    """``SEED``, or when negative a random seed shared by every rank."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def build_resumable_train_loader(
    cfg: CfgNode,
    mapper: Callable[[dict], dict],
    dicts: Sequence[dict[str, Any]],
    **loader_kwargs: Any,
) -> TrainingStream:
    """The training loader of ``dicts`` as a resumable :class:`TrainingStream`.

    Reads ``SOLVER.IMS_PER_BATCH``, ``DATALOADER.NUM_WORKERS``, ``DATALOADER.SAMPLER_TRAIN`` (only
    ``TrainingSampler``), ``DATALOADER.ASPECT_RATIO_GROUPING`` (must be False), ``SEED`` and
    ``DATASETS.TRAIN``.

    Args:
        cfg: the (scaled) training config.
        mapper: the training mapper.
        dicts: the training samples.
        loader_kwargs: further ``DataLoader`` arguments (e.g. ``pin_memory``).

    Raises:
        ValueError: naming the key, for another sampler, aspect-ratio grouping or an empty
            dataset.
    """
    if cfg.DATALOADER.SAMPLER_TRAIN != _SAMPLER:
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported: "
            f"ChimeraSeg's resumable training stream uses detectron2's {_SAMPLER}"
        )
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        raise ValueError(
            "DATALOADER.ASPECT_RATIO_GROUPING True is not supported: training images share "
            "INPUT.CROP.SIZE, and grouping would make each batch depend on buffered images"
        )
    if not dicts:
        raise ValueError(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} holds no samples")
    world_size = comm.get_world_size()
    seed = stream_seed(cfg)
    sampler = ResumableTrainingSampler(len(dicts), seed)
    info = StreamInfo(
        datasets=tuple(cfg.DATASETS.TRAIN),
        dataset_size=len(dicts),
        dataset_fingerprint=dataset_fingerprint(dicts),
        seed=seed,
        world_size=world_size,
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
    )
    samples = PositionSeededSamples(dicts, mapper, seed)
    loader = build_detection_train_loader(
        dataset=samples,
        mapper=None,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        seed=seed,  # the loader's own generator: creating its iterator leaves torch's RNG alone
        **loader_kwargs,
    )
    return TrainingStream(loader, sampler, samples, info)
