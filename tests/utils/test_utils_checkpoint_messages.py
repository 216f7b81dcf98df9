"""Checkpoint reads: exact error messages, CPU placement, no unsafe override, resume order."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from chimeraseg.utils import checkpoint_io
from chimeraseg.utils.checkpoint_io import (
    CheckpointError,
    describe_load_error,
    load_checkpoint_file,
    resume_candidates,
)

NOT_A_CHECKPOINT = "it is neither a torch.save archive nor a legacy torch checkpoint"
ADVICE = "expected a .pth file written by ChimeraSeg / torch.save"


class _Planter:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (IndexError("list index out of range\nsecond line"), "IndexError: list index out of range"),
        (IndexError(), "IndexError"),
        (KeyError("x" * 250), "KeyError: '" + "x" * 199),
        (IndexError("load with weights_only=False"), "IndexError"),
        (UnicodeError("Weights only load failed"), "UnicodeError"),
    ],
)
def test_deeper_reader_failures_name_the_error_and_its_first_line(
    error: BaseException, detail: str
) -> None:
    """The type and the first line (200 characters at most), never torch's weights-only text."""
    assert describe_load_error(error) == f"{NOT_A_CHECKPOINT} ({detail})"


def test_a_refused_global_is_described_in_full() -> None:
    """A pickle global outside the allow-list reads as a refusal to run code."""
    error = pickle.UnpicklingError("Weights only load failed. Unsupported global: GLOBAL os.system")
    assert describe_load_error(error) == (
        "it holds Python objects other than tensors and plain containers (refused: loading "
        "them could run code from the file)"
    )


def test_unreadable_and_non_dict_checkpoints_have_exact_messages(tmp_path) -> None:
    """An empty file and a saved list each raise one full, neutral message naming the file."""
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(empty)
    reason = "it is empty, truncated or a corrupt zip archive"
    assert str(info.value) == f"'{empty}' is not a checkpoint: {reason}; {ADVICE}"
    listed = tmp_path / "list.pth"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(listed)
    assert str(info.value) == f"'{listed}' is not a checkpoint: it holds a list"


def test_a_pickle_suffix_is_refused_with_the_full_message(tmp_path) -> None:
    """The refusal names the file and what it was for, and says why."""
    path = tmp_path / "model.pkl"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    assert str(info.value) == (
        f"refusing to load '{path}' (checkpoint): Python pickle files can run arbitrary code when "
        "loaded, and ChimeraSeg never writes them (its weights are .pth / .pt files)"
    )


def _save_tagged_cuda(obj: dict, path: Path) -> None:
    """torch.save, with every storage's location rewritten from 'cpu' to 'cuda:0'."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") == 1
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            target.writestr(name, data)


def test_checkpoints_saved_on_a_gpu_load_onto_the_cpu(tmp_path) -> None:
    """A storage tagged 'cuda:0' is read onto the CPU, with or without a GPU present."""
    path = tmp_path / "gpu.pth"
    _save_tagged_cuda({"w": torch.arange(3.0)}, path)
    loaded = load_checkpoint_file(path)
    assert loaded["w"].device.type == "cpu" and loaded["w"].tolist() == [0.0, 1.0, 2.0]


def test_the_no_weights_only_override_cannot_unpickle_code(tmp_path, monkeypatch) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 does not turn the reader into a plain unpickler."""
    marker, path = tmp_path / "planted", tmp_path / "w.pth"
    torch.save({"model": _Planter(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="Python objects other than tensors"):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_directory_fsync_is_a_no_op_where_the_directory_cannot_be_opened(tmp_path) -> None:
    """A missing directory is ignored (OSError suppressed), not raised."""
    assert checkpoint_io._fsync_directory(str(tmp_path / "missing")) is None


def test_resume_candidates_skip_hidden_and_foreign_entries_and_sort_by_time(tmp_path) -> None:
    """Only visible .pth files; fallbacks ordered by mtime, newest first, not by name."""
    for name, mtime in [("model_a.pth", 3000), ("model_b.pth", 1000), ("model_c.pth", 2000)]:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / ".model_z.pth").write_bytes(b"x")  # hidden
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "inference").mkdir()
    latest = str(tmp_path / "model_final.pth")  # named by the tag, missing
    got = [Path(p).name for p in resume_candidates(str(tmp_path), latest)]
    assert got == ["model_final.pth", "model_a.pth", "model_c.pth", "model_b.pth"]
