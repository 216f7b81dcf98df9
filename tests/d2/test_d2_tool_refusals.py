"""Tools refuse in one line and write only into their output folder: demo.py and export_onnx.py
through their real entry point (``run_tool``), run from a working directory that stays empty."""

from __future__ import annotations

import glob
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, REPO
from PIL import Image

pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)

from chimeraseg_test_utils import SYNTHETIC_CONFIG, load_script  # noqa: E402

from chimeraseg.utils.cli import REFUSAL_STATUS, run_tool  # noqa: E402
from chimeraseg.utils.user_cache import TEXT_CACHE_FOLDER, USER_TEXT_CACHE  # noqa: E402

pytestmark = [pytest.mark.detectron2, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_tool():
    return load_script("tools/demo.py", "chimeraseg_demo_refusals_tool")


@pytest.fixture(scope="module")
def export_tool():
    return load_script("tools/export_onnx.py", "chimeraseg_export_refusals_tool")


@pytest.fixture
def user_opts(tiny_opts, synthetic_root, tmp_path, monkeypatch) -> list[str]:
    """``tiny_opts`` with the text cache in the user cache (``CHIMERASEG_CACHE`` under tmp)."""
    monkeypatch.setenv("CHIMERASEG_CACHE", str(tmp_path / "user_cache"))
    at = tiny_opts.index("MODEL.CLIP.TEXT_CACHE_DIR")
    return [*tiny_opts[:at], *tiny_opts[at + 2 :], "MODEL.CLIP.TEXT_CACHE_DIR", USER_TEXT_CACHE]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photos" / "beach.png"
    path.parent.mkdir()
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(path)
    return path


def refusal(tool, name: str, args: list[str], capsys) -> str:  # noqa: ANN001
    """The one line ``tools/<name>`` prints on stderr when it refuses ``args`` (status 2
    checked), after what it printed on stdout."""
    with pytest.raises(SystemExit) as info:
        run_tool(lambda: tool.main(args), f"tools/{name}")
    out, err = capsys.readouterr()
    assert info.value.code == REFUSAL_STATUS, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tools/{name}: "), err
    return out + lines[0]


def test_every_config_keeps_the_text_cache_out_of_the_working_directory() -> None:
    from chimeraseg.d2.config import get_chimeraseg_cfg

    files = sorted(glob.glob(str(REPO / "configs" / "**" / "*.yaml"), recursive=True))
    values = {f: get_chimeraseg_cfg(f, []).MODEL.CLIP.TEXT_CACHE_DIR for f in files}
    assert values and set(values.values()) <= {"", USER_TEXT_CACHE}, values
    coco = REPO / "configs" / "coco-stuff-164k-156" / "chimeraseg_mitb0_80k.yaml"
    assert values[str(coco)] == USER_TEXT_CACHE


def test_demo_and_export_from_any_directory_write_only_their_outputs(
    demo_tool, export_tool, user_opts, photo, tmp_path, monkeypatch, capsys
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out, export = tmp_path / "out", tmp_path / "export"
    demo_tool.main(["--config-file", SYNTHETIC_CONFIG, "--input", str(photo), "--output", str(out),
                    "--vocabulary", "cat,sky", "--save-labels", "--allow-random-weights",
                    *user_opts])  # fmt: skip
    export_tool.main(["--config-file", SYNTHETIC_CONFIG, "--output", str(export),
                      "--allow-random-weights", *user_opts])  # fmt: skip
    assert list(cwd.iterdir()) == []  # nothing written where the tools ran
    assert sorted(p.name for p in out.iterdir()) == ["beach.png", "beach_labels.png",
                                                     "vocabulary.json"]  # fmt: skip
    cache = tmp_path / "user_cache" / TEXT_CACHE_FOLDER
    assert list(cache.glob("text_*.pt"))  # the text embeddings went to the user cache
    assert (export / "metadata.json").is_file()


def test_demo_refusals_are_one_line(demo_tool, user_opts, photo, tmp_path, capsys) -> None:
    base = ["--config-file", SYNTHETIC_CONFIG, "--allow-random-weights"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    huge = tmp_path / "huge" / "huge.png"  # a header claiming 20000 x 20000 pixels
    huge.parent.mkdir()
    Image.new("L", (8, 8)).save(huge)
    data = bytearray(huge.read_bytes())
    data[16:24] = (20000).to_bytes(4, "big") * 2  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # and its checksum
    huge.write_bytes(bytes(data))
    run = ["--input", str(photo), "--output", str(tmp_path / "o")]
    cases = [
        ([*base, "--input", str(photo), "--output", str(a_file), *user_opts], "is a file, not"),
        ([*base, "--input", str(huge), "--output", str(tmp_path / "o"), *user_opts],
         "too many pixels to decode"),  # skipped with a note, then refused
        ([*base, "--input", str(huge), "--output", str(tmp_path / "o"), *user_opts],
         "none of the 1 inputs is a readable image"),
        ([*base, *run, "--vocabulary", "grass,grass", *user_opts], "grass"),
        ([*base, *run, "--vocabulary", "cat,sky", "--unseen", "lava", *user_opts], "lava"),
        (["--config-file", str(tmp_path / "missing.yaml"), *run], "missing.yaml"),
        ([*base, *run, *user_opts, "MODEL.NO_SUCH_KEY", "1"], "MODEL.NO_SUCH_KEY"),
    ]  # fmt: skip
    for args, expected in cases:
        assert expected in refusal(demo_tool, "demo.py", args, capsys), args
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"not a checkpoint")
    line = refusal(demo_tool, "demo.py", ["--config-file", SYNTHETIC_CONFIG, *run, *user_opts,
                                          "MODEL.WEIGHTS", str(weights)], capsys)  # fmt: skip
    assert "model.pth" in line
    demo_tool.main([*base, *run, *user_opts])  # fills the text cache, then damages it
    cache = Path(os.environ["CHIMERASEG_CACHE"]) / TEXT_CACHE_FOLDER
    for entry in cache.glob("text_*.pt"):
        entry.write_bytes(b"damaged")
    line = refusal(demo_tool, "demo.py", [*base, *run, *user_opts], capsys)
    assert "text-embedding cache" in line and "delete" in line


def test_export_refusals_are_one_line(export_tool, user_opts, tmp_path, capsys) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    args = ["--config-file", SYNTHETIC_CONFIG, "--output", str(link), "--allow-random-weights"]
    line = refusal(export_tool, "export_onnx.py", [*args, *user_opts], capsys)
    assert "is a symbolic link" in line and list(elsewhere.iterdir()) == []
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(b"pickle")
    args = ["--config-file", SYNTHETIC_CONFIG, "--output", str(tmp_path / "e")]
    line = refusal(export_tool, "export_onnx.py", [*args, *user_opts, "MODEL.WEIGHTS",
                                                   str(weights)], capsys)  # fmt: skip
    assert "weights.pkl" in line and not (tmp_path / "e").exists()
