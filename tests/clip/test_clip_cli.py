"""One declaration of the CLIP options: every tool parses --clip-weights the same way."""

from __future__ import annotations

import argparse

import pytest
from chimeraseg_test_utils import DETECTRON2_SKIP_REASON, load_script

from chimeraseg.clip.cli import DEFAULT_CLIP_NAME, add_clip_arguments, clip_weights

# Each tool's parser and the other arguments it requires.
TOOLS = {
    "tools/benchmark.py": ("parse_args", []),
    "tools/run_demo.py": ("get_parser", []),
    "tools/check_cluster.py": ("get_parser", []),
    "tools/build_text_embeddings.py": ("parse_args", ["--split", "synthetic", "--cache-dir", "c"]),
    "tools/pseudo_mask_quality.py": ("parse_args", ["--split", "synthetic"]),
}
D2_TOOLS = {"tools/check_cluster.py"}  # its parser lists the checks of chimeraseg.d2


def _parse(tool: str, argv: list[str]) -> argparse.Namespace:
    function, required = TOOLS[tool]
    if tool in D2_TOOLS:
        pytest.importorskip("detectron2", reason=DETECTRON2_SKIP_REASON)
    parse = getattr(load_script(tool, f"clip_cli_{tool.split('/')[1][:-3]}"), function)
    if function == "get_parser":
        return parse().parse_args([*required, *argv])
    return parse([*required, *argv])


def _parser(default_weights: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    add_clip_arguments(parser, name=True, default_weights=default_weights)
    return parser


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_takes_a_tag_or_file_and_the_old_spelling(tool: str) -> None:
    for flag in ("--clip-weights", "--clip-pretrained"):
        assert clip_weights(_parse(tool, [flag, "weights/ViT-B-16.pt"])) == "weights/ViT-B-16.pt"
    assert clip_weights(_parse(tool, ["--allow-random-clip"])) is None


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_refuses_weights_with_random_clip(tool: str, capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(tool, ["--clip-weights", "openai", "--allow-random-clip"])
    assert "not allowed with argument --clip-weights" in capsys.readouterr().err


def test_defaults_and_name_aliases() -> None:
    args = _parser("openai").parse_args([])
    assert (args.clip_name, clip_weights(args)) == (DEFAULT_CLIP_NAME, "openai")
    assert clip_weights(_parser(None).parse_args([])) is None  # the tool's config decides
    assert _parser(None).parse_args(["--clip-model", "x.json"]).clip_name == "x.json"
    assert clip_weights(_parser("openai").parse_args(["--allow-random-clip"])) is None
