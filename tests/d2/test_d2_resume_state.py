"""The resumable training stream and the per-rank training-state files: order, workers, bad input.

The bit-for-bit kill-and-resume runs are in test_d2_exact_resume.py; these are the fast parts:
the stream is detectron2's, does not depend on the worker count and starts at any batch; state
files of another stream are refused with one line (nothing written), unreadable ones are skipped
for the previous checkpoint, old checkpoints and changed configs resume with a warning.
"""

from __future__ import annotations

import itertools
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, SYNTHETIC_CONFIG

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

import torch  # noqa: E402
from detectron2.data.samplers import TrainingSampler  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from chimeraseg.d2 import ChimeraSegTrainer, get_chimeraseg_cfg  # noqa: E402
from chimeraseg.d2.data.resumable import (  # noqa: E402
    ResumableTrainingSampler,
    seeded_sample_rng,
)
from chimeraseg.d2.training_state import TrainingStateError, state_file  # noqa: E402


def _capture(caplog: pytest.LogCaptureFixture, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger=name)
    return logger


@pytest.mark.parametrize("world", [1, 2])
def test_sampler_is_detectron2s_stream_from_any_start(world, monkeypatch) -> None:
    for rank in range(world):
        monkeypatch.setattr(comm, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        expected = list(itertools.islice(TrainingSampler(5, seed=3), 12))  # 2+ epochs
        sampler = ResumableTrainingSampler(5, seed=3)
        stream = list(itertools.islice(sampler, 12))
        assert [index for _, index in stream] == expected
        assert [position for position, _ in stream] == [rank + world * k for k in range(12)]
        sampler.start = 7
        assert list(itertools.islice(sampler, 5)) == stream[7:12]


def test_sample_rng_is_a_function_of_seed_and_position_and_is_restored() -> None:
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    before = (np.random.get_state()[1].copy(), random.getstate())  # noqa: NPY002

    def draws(seed: int, position: int) -> tuple[float, float]:
        with seeded_sample_rng(seed, position):
            return float(np.random.rand()), random.random()  # noqa: NPY002

    assert draws(0, 5) == draws(0, 5)
    assert draws(0, 5) != draws(0, 6) and draws(0, 5) != draws(1, 5)
    np.testing.assert_array_equal(np.random.get_state()[1], before[0])  # noqa: NPY002
    assert random.getstate() == before[1]


def _batches(stream, count: int) -> list[list[tuple[str, torch.Tensor, torch.Tensor]]]:
    out = []
    for batch in itertools.islice(iter(stream), count):
        out.append([(d["file_name"], d["image"], d["sem_seg"]) for d in batch])
    return out


def _assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for batch_a, batch_b in zip(a, b, strict=True):
        assert [s[0] for s in batch_a] == [s[0] for s in batch_b]
        for (_, image_a, label_a), (_, image_b, label_b) in zip(batch_a, batch_b, strict=True):
            assert torch.equal(image_a, image_b) and torch.equal(label_a, label_b)


def test_batches_do_not_depend_on_workers_and_start_at_any_iteration(
    tiny_opts, synthetic_root
) -> None:
    opts = [*tiny_opts, "SEED", "0", "INPUT.COLOR_AUG_SSD", "True"]
    plain = ChimeraSegTrainer.build_train_loader(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    first = _batches(plain, 5)  # 10 samples of 6: crosses an epoch
    workers = get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, "DATALOADER.NUM_WORKERS", "2"])
    _assert_same_batches(_batches(ChimeraSegTrainer.build_train_loader(workers), 5), first)
    plain.start_at(3)
    _assert_same_batches(_batches(plain, 2), first[3:5])
    # Random augmentations differ between the two passes over the same image.
    by_file: dict[str, list[torch.Tensor]] = {}
    for name, image, _ in itertools.chain.from_iterable(first):
        by_file.setdefault(name, []).append(image)
    repeated = [images for images in by_file.values() if len(images) > 1]
    assert repeated and any(not torch.equal(a[0], a[1]) for a in repeated)


def test_config_refuses_aspect_ratio_grouping_and_other_samplers(tiny_opts, synthetic_root) -> None:
    grouped = [*tiny_opts, "DATALOADER.ASPECT_RATIO_GROUPING", "True"]
    with pytest.raises(ValueError, match="DATALOADER.ASPECT_RATIO_GROUPING True"):
        ChimeraSegTrainer.build_train_loader(get_chimeraseg_cfg(SYNTHETIC_CONFIG, grouped))
    other = [*tiny_opts, "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"]
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN 'RepeatFactorTrainingSampler'"):
        ChimeraSegTrainer.build_train_loader(get_chimeraseg_cfg(SYNTHETIC_CONFIG, other))


# ------------------------------------------------------------------ checkpoints with state files
@pytest.fixture(scope="module")
def trained_run(tiny_opts, synthetic_root, tmp_path_factory) -> tuple[Path, list[str]]:
    """A 2-iteration run with a checkpoint after each iteration (and model_final)."""
    out = tmp_path_factory.mktemp("resume_state") / "run"
    opts = [*tiny_opts, "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "1", "SEED", "0",
            "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "0"]  # fmt: skip
    trainer = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return out, opts


@pytest.fixture
def run_copy(trained_run, tmp_path) -> tuple[Path, list[str]]:
    """A copy of :func:`trained_run` (the test may damage it)."""
    out, opts = trained_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return copy, [*opts, "OUTPUT_DIR", str(copy)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _resumed(opts: list[str], extra: list[str] = ()) -> ChimeraSegTrainer:
    trainer = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, [*opts, *extra]))
    trainer.resume_or_load(resume=True)
    return trainer


def test_every_checkpoint_has_its_state_and_resume_restores_it(run_copy) -> None:
    out, opts = run_copy
    names = sorted(p.name for p in out.iterdir() if p.suffix in (".pth", ".state"))
    assert names == [
        "model_0000000.pth", "model_0000000.rank0.state", "model_0000001.pth",
        "model_0000001.rank0.state", "model_final.pth", "model_final.rank0.state",
    ]  # fmt: skip
    state = torch.load(state_file(str(out / "model_final.pth"), 0), weights_only=True)
    assert (state["iteration"], state["rank"], state["stream"]["batch_size"]) == (1, 0, 2)
    trainer = _resumed(opts, ["SOLVER.MAX_ITER", "3"])
    assert trainer.start_iter == 2
    assert trainer._trainer.data_loader.sampler.start == 2 * 2  # 2 iterations of 2 images
    assert torch.equal(torch.get_rng_state(), state["rng"]["torch"])
    sgd = trainer.model.model.criterion.losses["loss_sgd"]
    saved = state["rng"]["gumbel"][0]
    assert saved and all(torch.equal(sgd.generator_states()[k], v) for k, v in saved.items())


def test_evaluation_during_training_leaves_the_rngs_alone(run_copy) -> None:
    out, opts = run_copy
    trainer = _resumed(opts, ["SOLVER.MAX_ITER", "3", "DATALOADER.NUM_WORKERS", "1"])
    torch_state, numpy_keys = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    python_state = random.getstate()
    results = trainer.test(trainer.cfg, trainer.model)
    assert "sem_seg" in results
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_keys)  # noqa: NPY002
    assert random.getstate() == python_state


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["DATASETS.TRAIN", "('synthetic_zs_val',)"], "datasets ['synthetic_zs_train'] -> "),
        (["SOLVER.IMS_PER_BATCH", "4"], "batch_size 2 -> 4"),
    ],
    ids=["another-dataset", "another-batch-size"],
)
def test_state_of_another_stream_is_refused_in_one_line(run_copy, change, expected) -> None:
    out, opts = run_copy
    before = _files(out)
    with pytest.raises(TrainingStateError) as error:
        _resumed(opts, change)
    message = str(error.value)
    assert expected in message and "model_final.rank0.state" in message
    assert "\n" not in message
    assert _files(out) == before  # nothing written, nothing removed


def test_state_of_another_world_size_is_refused(run_copy) -> None:
    out, opts = run_copy
    path = state_file(str(out / "model_final.pth"), 0)
    state = torch.load(path, weights_only=True)
    state["stream"]["world_size"], state["stream"]["batch_size"] = 2, 1  # as 2 processes write
    torch.save(state, path)
    with pytest.raises(TrainingStateError, match=r"world_size 2 -> 1, batch_size 1 -> 2"):
        _resumed(opts)


def test_truncated_state_falls_back_to_the_previous_checkpoint(run_copy, caplog) -> None:
    out, opts = run_copy
    path = Path(state_file(str(out / "model_final.pth"), 0))
    path.write_bytes(path.read_bytes()[:100])
    logger = _capture(caplog, "chimeraseg.d2.checkpoint")
    try:
        trainer = _resumed(opts, ["SOLVER.MAX_ITER", "3"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "model_final.rank0.state' is not a training-state file" in caplog.text
    assert "trying the previous checkpoint" in caplog.text
    assert trainer.checkpointer.resumed_from == str(out / "model_0000001.pth")
    assert trainer.start_iter == 2  # model_0000001 is of the same iteration as model_final
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert path.exists()  # kept for inspection


def test_changed_config_resumes_with_a_warning_naming_the_keys(run_copy, caplog) -> None:
    out, opts = run_copy
    logger = _capture(caplog, "chimeraseg.d2.training_state")
    try:
        _resumed(opts, ["SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR", "0.001",
                        "DATALOADER.NUM_WORKERS", "2"])  # fmt: skip
    finally:
        logger.removeHandler(caplog.handler)
    warning = caplog.text
    assert "the config differs" in warning and "SOLVER.BASE_LR: 0.0002 -> 0.001" in warning
    assert "SOLVER.MAX_ITER: 2 -> 3" in warning
    # The copy's OUTPUT_DIR and the worker count do not change the run: not named.
    assert "OUTPUT_DIR" not in warning and "NUM_WORKERS" not in warning


def test_checkpoint_without_state_resumes_as_before_with_a_warning(run_copy, caplog) -> None:
    out, opts = run_copy
    for path in out.glob("*.state"):
        path.unlink()
    logger = _capture(caplog, "chimeraseg.d2.checkpoint")
    try:
        trainer = _resumed(opts, ["SOLVER.MAX_ITER", "3"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "has no training-state files" in caplog.text
    assert trainer.start_iter == 2 and trainer.checkpointer.loaded_training_state is None
    assert trainer._trainer.data_loader.sampler.start == 2 * 2  # the stream still continues


def test_ranks_agree_on_a_checkpoint_from_every_ranks_verdict(monkeypatch) -> None:
    from chimeraseg.d2.checkpoint import ChimeraSegCheckpointer
    from chimeraseg.d2.training_state import StateCheck

    checkpointer = ChimeraSegCheckpointer(torch.nn.Linear(1, 1))
    checkpointer.training_state = object()  # any: only "is there one" matters here

    def verdict(*checks: StateCheck) -> str:
        monkeypatch.setattr(comm, "all_gather", lambda _: list(checks))
        return checkpointer._agreed_problem(checks[0], "model_0000009.pth")

    ok, absent = (
        StateCheck("ok"),
        StateCheck("absent", "'model_0000009.rank1.state' does not exist"),
    )
    assert verdict(ok, ok) == ""
    assert verdict(absent, absent) == ""  # an old checkpoint: resumed with a warning
    assert verdict(ok, absent) == (
        "rank 1: training state missing: 'model_0000009.rank1.state' does not exist"
    )
    assert verdict(ok, StateCheck("unreadable", "truncated")) == "rank 1: truncated"
    with pytest.raises(TrainingStateError, match="another stream"):
        verdict(StateCheck("unreadable", "x"), StateCheck("mismatch", "another stream"))


def test_a_random_seed_is_drawn_once_and_kept_by_the_resume(tiny_opts, synthetic_root, tmp_path):
    opts = [*tiny_opts, "OUTPUT_DIR", str(tmp_path / "run"), "SEED", "-1",
            "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0"]  # fmt: skip
    first = ChimeraSegTrainer(get_chimeraseg_cfg(SYNTHETIC_CONFIG, opts))
    first.resume_or_load(resume=False)
    first.train()
    saved = torch.load(state_file(str(tmp_path / "run" / "model_final.pth"), 0), weights_only=True)
    seed = saved["stream"]["seed"]
    assert seed == first._trainer.data_loader.info.seed
    resumed = _resumed(opts, ["SOLVER.MAX_ITER", "2"])
    stream = resumed._trainer.data_loader
    assert (stream.info.seed, stream.sampler.seed, stream.samples.seed) == (seed, seed, seed)
