"""Output planning: no output over an input or over another output; only written files count."""

from __future__ import annotations

import pytest

from chimeraseg.utils.output_files import OutputError, confirm_written, plan_outputs


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
