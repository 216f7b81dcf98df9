"""Outputs stay in their folder: no output over an input or another output, no write through a
symbolic link, an --output that is a file refused, only written files reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chimeraseg.data.prediction_io import write_label_png, write_vocabulary_json
from chimeraseg.evaluation.report import write_json
from chimeraseg.utils.output_files import (
    OutputError,
    atomic_path,
    atomic_write_text,
    check_output_folder,
    confirm_written,
    plan_outputs,
    refuse_symlink,
)


def test_plan_names_each_output_of_each_input(tmp_path) -> None:
    inputs = [str(tmp_path / "in" / "a.jpg"), str(tmp_path / "in" / "b.png")]
    plans = plan_outputs(inputs, str(tmp_path / "out"), [".png", "_labels.png"])
    out = tmp_path / "out"
    assert plans == [
        {".png": str(out / "a.png"), "_labels.png": str(out / "a_labels.png")},
        {".png": str(out / "b.png"), "_labels.png": str(out / "b_labels.png")},
    ]


def test_output_folder_holding_an_input_is_refused(tmp_path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(OutputError, match=r"is the folder of the input .*a\.png"):
        plan_outputs([str(tmp_path / "x" / "a.png")], str(tmp_path / "x" / "."), [".png"])


def test_output_that_links_to_an_input_is_refused(tmp_path) -> None:
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(b"photo")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").symlink_to(photo)  # writing it would write the photo
    with pytest.raises(OutputError, match=r"out/a\.png would replace the input .*photos/a\.png"):
        plan_outputs([str(photo)], str(tmp_path / "out"), [".png"])


def test_two_inputs_writing_one_file_are_named(tmp_path) -> None:
    inputs = [str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg")]
    with pytest.raises(OutputError, match=r"a/x\.jpg and .*b/x\.jpg would both write .*x\.png"):
        plan_outputs(inputs, str(tmp_path / "out"), [".png"])


def test_only_non_empty_files_are_confirmed(tmp_path) -> None:
    path = tmp_path / "o.png"
    with pytest.raises(OutputError, match=r"o\.png was not written"):
        confirm_written(str(path))
    path.write_bytes(b"")
    with pytest.raises(OutputError, match=r"o\.png was not written"):
        confirm_written(str(path))
    path.write_bytes(b"png")
    assert confirm_written(str(path)) == str(path)


# ------------------------------------------------------- writes never go through a symlink
def _planted_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """``(out/<name>, outside file)``: a symbolic link in the output folder to a file outside."""
    outside = tmp_path / "outside" / f"precious_{name}"
    outside.parent.mkdir(exist_ok=True)
    outside.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / name).symlink_to(outside)
    return out / name, outside


def _write_png(path: str) -> None:
    from chimeraseg.utils.demo_images import write_png

    write_png(path, np.zeros((4, 5, 3), np.uint8))


def _write_plot(path: str) -> None:
    from chimeraseg.evaluation.plots import plot_per_class_iou

    metrics = {"IoU-a": 50.0, "IoU-b": 60.0, "mIoU": 55.0, "sIoU": 50.0, "uIoU": 60.0}
    plot_per_class_iou(metrics, ["a", "b"], [0], [1], path)


WRITERS = {
    "labels.png": lambda p: write_label_png(p, np.zeros((4, 5), np.int64), 3),
    "vocabulary.json": lambda p: write_vocabulary_json(p, ["a"], [False], 0.0),
    "metrics.json": lambda p: write_json(p, {"mIoU": 1.0}),
    "overlay.png": _write_png,
    "plot.png": _write_plot,
    "text.md": lambda p: atomic_write_text(p, "page"),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_symlink_in_the_output_folder_is_replaced_never_written_through(
    tmp_path: Path, name: str
) -> None:
    link, outside = _planted_link(tmp_path, name)
    WRITERS[name](str(link))
    assert outside.read_bytes() == b"precious"  # the link's target is untouched
    assert not link.is_symlink() and link.stat().st_size > 0  # the link itself was replaced
    assert sorted(p.name for p in link.parent.iterdir()) == [name]  # no temporary file left


def test_atomic_path_keeps_the_extension_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        assert tmp.endswith(".png") and Path(tmp).parent == tmp_path
        Path(tmp).write_bytes(b"partial")
        raise KeyError("writer failed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(OutputError, match=r"a\.png was not written"), atomic_path(target):
        pass  # a writer that wrote nothing
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_links_that_cannot_be_replaced_and_files_named_as_folders_are_refused(tmp_path) -> None:
    link, _ = _planted_link(tmp_path, "results.jsonl")
    with pytest.raises(OutputError, match=r"results\.jsonl is a symbolic link \(to .*precious"):
        refuse_symlink(str(link), "ledger")
    assert refuse_symlink(str(tmp_path / "plain"), "ledger") == str(tmp_path / "plain")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=r"--output .*notes\.txt is a file, not a folder"):
        check_output_folder(str(a_file))
    with pytest.raises(OutputError, match="is a file, not a folder"):
        plan_outputs([str(tmp_path / "in" / "a.png")], str(a_file), [".png"])
    assert check_output_folder(str(tmp_path / "new")) == str(tmp_path / "new")
