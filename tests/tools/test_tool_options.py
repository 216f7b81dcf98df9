"""Every tool's command line: help on every option, real examples at the end of ``--help``, one
spelling per option (old spellings still parse, with a one-line deprecation note), no warning at
start-up."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys

import pytest
from chimeraseg_test_utils import REPO, load_script

from chimeraseg.utils.tool_parser import (
    add_datasets_root,
    add_deprecated_alias,
    quiet_import_warnings,
    tool_parser,
)

SCRIPTS = sorted(
    str(p.relative_to(REPO)) for d in ("tools", "datasets") for p in (REPO / d).glob("*.py")
)
# Scripts whose parser is built by a function other than main(argv).
_PARSER_FUNCTIONS = {"tools/train_net.py": "get_parser", "tools/submit_slurm.py": "get_parser"}
_PARSE_ARGS = argparse.ArgumentParser.parse_args


class _Parsed(Exception):
    """Raised instead of parsing: the parser the script built is caught before it runs."""


def _parser_of(script: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``script`` builds; skips a detectron2 tool where detectron2 is missing."""
    try:
        return _build_parser(script, monkeypatch)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "detectron2":
            raise
        pytest.skip(f"{script} needs detectron2")


def _build_parser(script: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``script`` builds (its main stops at parse_args, before doing anything)."""
    module = load_script(script, "chimeraseg_options_" + script.replace("/", "_")[:-3])
    function = _PARSER_FUNCTIONS.get(script)
    if function:
        return getattr(module, function)()
    caught: list[argparse.ArgumentParser] = []

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    try:
        module.main([])
    except _Parsed:
        return caught[0]
    finally:
        monkeypatch.undo()
    raise AssertionError(f"{script}: main([]) returned without parsing its arguments")


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return _PARSE_ARGS(parser, argv)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_has_help_and_the_help_ends_with_real_examples(script, monkeypatch):
    parser = _parser_of(script, monkeypatch)
    silent = [
        a.option_strings or a.dest
        for a in parser._actions
        if not a.help and type(a).__name__ != "_DeprecatedSpelling"
    ]
    assert not silent, f"{script}: options without help text: {silent}"
    text = parser.format_help().rstrip().splitlines()
    examples = text[text.index("examples:") + 1 :] if "examples:" in text else []
    assert 1 <= len(examples) <= 3, f"{script}: --help must end with one or two examples"
    for line in examples:
        words = shlex.split(line)
        assert script in words, f"{script}: example {line!r} does not run this script"
        for word in words[words.index(script) + 1 :]:
            if word == "--":
                break
            if word.startswith("--"):
                assert word in parser._option_string_actions, f"{script}: {line!r}: {word}?"


# (script, arguments with an old spelling, old, canonical, dest, value expected)
OLD_SPELLINGS = [
    ("tools/build_text_embeddings.py", ["--names-file", "n.txt", "--cache-dir", "c"],
     "--names-file", "--vocabulary-file", "vocabulary_file", "n.txt"),
    ("tools/build_text_embeddings.py", ["--split", "synthetic", "--variant", "zs3",
     "--cache-dir", "c"], "--variant", "--split-variant", "split_variant", "zs3"),
    ("tools/build_text_embeddings.py", ["--split", "s", "--clip-pretrained", "w.pt",
     "--cache-dir", "c"], "--clip-pretrained", "--clip-weights", "clip_weights", "w.pt"),
    ("tools/build_text_embeddings.py", ["--split", "s", "--clip-model", "RN50",
     "--cache-dir", "c"], "--clip-model", "--clip-name", "clip_name", "RN50"),
    ("tools/evaluate_predictions.py", ["--pred-dir", "p", "--gt-dir", "g",
     "--class-names-file", "n.txt"], "--class-names-file", "--vocabulary-file",
     "vocabulary_file", "n.txt"),
    ("tools/evaluate_predictions.py", ["--pred-dir", "p", "--gt-dir", "g", "--split", "s",
     "--output", "m.json"], "--output", "--output-json", "output_json", "m.json"),
    ("tools/evaluate_predictions.py", ["--pred-dir", "p", "--gt-dir", "g", "--split", "s",
     "--plot", "iou.png"], "--plot", "--output-plot", "output_plot", "iou.png"),
    ("tools/benchmark.py", ["--output", "b.json"], "--output", "--output-json", "output_json",
     "b.json"),
    ("tools/benchmark.py", ["--markdown", "b.md"], "--markdown", "--output-markdown",
     "output_markdown", "b.md"),
    ("tools/pseudo_mask_quality.py", ["--split", "s", "--json", "q.json"], "--json",
     "--output-json", "output_json", "q.json"),
    ("tools/ablate_synthetic.py", ["--datasets", "d"], "--datasets", "--datasets-root",
     "datasets_root", "d"),
    ("tools/run_demo.py", ["--datasets", "d"], "--datasets", "--datasets-root", "datasets_root",
     "d"),
    ("tools/web_demo.py", ["--datasets", "d"], "--datasets", "--datasets-root", "datasets_root",
     "d"),
    ("tools/check_cluster.py", ["--datasets", "d"], "--datasets", "--datasets-root",
     "datasets_root", "d"),
    *[(s, ["--root", "d"], "--root", "--datasets-root", "datasets_root", "d")
      for s in SCRIPTS if s.startswith("datasets/")],
]  # fmt: skip


@pytest.mark.parametrize(("script", "argv", "old", "new", "dest", "value"), OLD_SPELLINGS)
def test_old_spellings_still_parse_and_say_the_new_one(
    script, argv, old, new, dest, value, monkeypatch, capsys
):
    parser = _parser_of(script, monkeypatch)
    assert new in parser._option_string_actions
    assert not re.search(rf"{old}(?![\w-])", parser.format_help())  # --help shows one spelling
    capsys.readouterr()
    assert str(getattr(_parse(parser, argv), dest)) == value
    err = capsys.readouterr().err
    assert err.strip() == f"{parser.prog}: {old} is deprecated, use {new}"


def test_an_alias_keeps_exclusivity_and_required_groups(capsys):
    parser = tool_parser("t", ["python t.py --a x"])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--a", help="a")
    group.add_argument("--vocabulary-file", help="b")
    add_deprecated_alias(group, "--names-file", "--vocabulary-file")
    assert _parse(parser, ["--names-file", "n"]).vocabulary_file == "n"
    with pytest.raises(SystemExit):
        _parse(parser, ["--a", "x", "--names-file", "n"])
    with pytest.raises(SystemExit):
        _parse(parser, [])
    with pytest.raises(ValueError, match="--nothing is not an option"):
        add_deprecated_alias(parser, "--old", "--nothing")


def test_datasets_root_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", "/data/sets")
    parser = tool_parser("t", ["python t.py"])
    add_datasets_root(parser, "--root")
    assert _parse(parser, []).datasets_root == "/data/sets"


def test_quiet_import_warnings_only_hides_import_time_warnings(recwarn):
    quiet_import_warnings(("fvcore.nn", "chimeraseg_no_such_module"))
    assert not [w for w in recwarn if "torch.jit.script" in str(w.message)]
    import warnings

    warnings.warn("`torch.jit.script` is deprecated (later)", FutureWarning, stacklevel=1)
    assert len(recwarn) == 1  # the filter was scoped to the import


@pytest.mark.detectron2
@pytest.mark.parametrize("script", ["tools/train_net.py"])
def test_help_prints_no_warning(script):
    pytest.importorskip("detectron2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run(
        [sys.executable, script, "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert done.stdout.rstrip().splitlines()[-1].strip().startswith(f"python {script}")
