"""Config files are read without running code: Python tags are refused naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from chimeraseg.utils.config_yaml import ConfigFileError, load_config_yaml


def _plant(path: Path, marker: Path) -> Path:
    """A YAML whose tag would create ``marker`` if it were loaded unsafely."""
    path.write_text(
        "SOLVER:\n"
        f"  BASE_LR: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n"
        "  MAX_ITER: 10\n"
    )
    return path


def test_python_tag_is_refused_naming_the_file_and_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil.yaml", marker)
    with pytest.raises(ConfigFileError, match=r"refusing config file '.*evil\.yaml'.*line 2"):
        load_config_yaml(evil)
    assert not marker.exists()


def test_python_tag_in_a_base_names_the_base_not_the_child(tmp_path) -> None:
    marker = tmp_path / "pwned"
    _plant(tmp_path / "base_evil.yaml", marker)
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base_evil.yaml\nSOLVER:\n  MAX_ITER: 3\n")
    with pytest.raises(ConfigFileError, match=r"'.*base_evil\.yaml'") as info:
        load_config_yaml(child)
    assert "child.yaml" not in str(info.value)
    assert not marker.exists()


def test_bases_merge_in_order_and_the_child_wins(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("A: {X: 1, Y: 1}\nB: 1\n")
    (tmp_path / "b.yaml").write_text("A: {Y: 2}\nC: [1, 2]\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: [sub/a.yaml, b.yaml]\nA: {Z: 3}\nB: 5\n")
    assert load_config_yaml(child) == {"A": {"X": 1, "Y": 2, "Z": 3}, "B": 5, "C": [1, 2]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("_BASE_: https://example.com/base.yaml\n", r"is a URL; .*local files only"),
        ("_BASE_: loop.yaml\n", r"extends itself"),
        ("- 1\n- 2\n", r"must hold a mapping of keys, not a list"),
        ("A: [1, 2\n", r"is not valid YAML"),
        ("_BASE_: missing.yaml\n", r"'.*missing\.yaml' does not exist"),
        ("_BASE_: [3]\n", r"_BASE_ = \[3\] must name files"),
    ],
)
def test_bad_config_files_are_named(tmp_path, text, message) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=message):
        load_config_yaml(path)


def test_mapping_over_a_value_of_a_base_is_an_error_naming_the_key(tmp_path) -> None:
    (tmp_path / "base.yaml").write_text("A: 1\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nA: {B: 2}\n")
    with pytest.raises(ConfigFileError, match=r"child\.yaml': key A is a mapping here"):
        load_config_yaml(child)


def test_binary_file_is_named(tmp_path) -> None:
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ConfigFileError, match=r"'.*weights\.yaml' is not UTF-8"):
        load_config_yaml(path)
