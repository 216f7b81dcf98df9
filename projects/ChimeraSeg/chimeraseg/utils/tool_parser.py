"""The command line of every tool: one parser shape, old spellings as deprecated aliases.

- :func:`tool_parser`: an ``argparse`` parser whose ``--help`` ends with real example commands
  (``RawDescriptionHelpFormatter``, so the examples keep their lines); :func:`examples_epilog`
  gives that ending to a parser made elsewhere (detectron2's ``default_argument_parser``).
- :func:`add_deprecated_alias`: an old spelling of an option keeps working, hidden from
  ``--help``, and prints one line on stderr naming the spelling to use instead.
- :func:`quiet_import_warnings`: imports pinned third-party modules whose import itself warns
  (fvcore.nn and detectron2.modeling call the deprecated ``torch.jit.script`` at import), with
  exactly those warnings ignored, so that no tool prints a warning on start-up. Everything
  they warn about later, and every other warning, stays visible.

The option names every tool shares: ``--config-file FILE``, ``--datasets-root DIR`` (the folder
that ``DETECTRON2_DATASETS`` names), ``--vocabulary-file FILE`` (class names, one a line),
``--output DIR`` (always a folder), ``--output-json FILE`` / ``--output-markdown FILE`` (one
output file), ``--json`` (print the result as JSON on stdout). ``--dataset-dir DIR``
(``tools/pseudo_mask_quality.py``) is another option: one dataset's prepared folder, not the root.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = [
    "DATASETS_ROOT_HELP",
    "add_datasets_root",
    "add_deprecated_alias",
    "examples_epilog",
    "quiet_import_warnings",
    "tool_parser",
]

DATASETS_ROOT_HELP = "datasets root, the folder DETECTRON2_DATASETS names (default: %(default)s)"
# (category, message regex) of warnings that third-party modules raise while being imported.
_IMPORT_TIME_WARNINGS = ((FutureWarning, r"`torch\.jit\.script` is deprecated"),)
# A module whose import raises them (chimeraseg.d2 adds detectron2.modeling).
_NOISY_IMPORTS = ("fvcore.nn",)


def tool_parser(description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """A parser whose ``--help`` ends with ``examples`` (one or two real commands).

    Args:
        description: what the tool does (the first line of its docstring).
        examples: command lines, shown as written under "examples:".

    Raises:
        ValueError: no example given.
    """
    return argparse.ArgumentParser(
        description=description,
        epilog=examples_epilog(examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def examples_epilog(examples: Sequence[str]) -> str:
    """The end of ``--help``: "examples:" and one indented command a line.

    Raises:
        ValueError: no example given.
    """
    if not examples:
        raise ValueError("examples_epilog: give at least one example command")
    return "examples:\n" + "\n".join(f"  {line}" for line in examples)


def add_datasets_root(parser: Any, *old: str) -> None:
    """Adds ``--datasets-root DIR`` (default ``$DETECTRON2_DATASETS``, else ``datasets``).

    Args:
        parser: the parser or argument group.
        old: earlier spellings kept as deprecated aliases (``--datasets``, ``--root``).
    """
    parser.add_argument(
        "--datasets-root",
        metavar="DIR",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help=DATASETS_ROOT_HELP,
    )
    for spelling in old:
        add_deprecated_alias(parser, spelling, "--datasets-root")


class _DeprecatedSpelling(argparse.Action):
    """Does what the canonical option's action does, after a one-line note on stderr."""

    def __init__(self, option_strings: list[str], dest: str, target: argparse.Action) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=target.nargs,
            const=target.const,
            default=argparse.SUPPRESS,
            type=target.type,
            choices=target.choices,
            help=argparse.SUPPRESS,
            metavar=target.metavar,
        )
        self.target = target

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        canonical = self.target.option_strings[0]
        print(
            f"{parser.prog}: {option_string} is deprecated, use {canonical}",
            file=sys.stderr,
        )
        self.target(parser, namespace, values, canonical)


def add_deprecated_alias(parser: Any, old: str, canonical: str) -> None:
    """Accepts ``old`` as a hidden, deprecated spelling of the option ``canonical``.

    Args:
        parser: the parser, argument group or mutually exclusive group that holds
            ``canonical`` (the alias joins it, so exclusivity and ``required`` still hold).
        old: the old option string, e.g. ``"--names-file"``.
        canonical: an option string of an option added before, e.g. ``"--vocabulary-file"``.

    Raises:
        ValueError: ``canonical`` is not an option of ``parser``.
    """
    actions = getattr(parser, "_group_actions", None) or parser._actions
    target = next((a for a in actions if canonical in a.option_strings), None)
    if target is None:
        raise ValueError(f"add_deprecated_alias: {canonical} is not an option of this parser")
    parser.add_argument(old, action=_DeprecatedSpelling, dest=target.dest, target=target)


def quiet_import_warnings(modules: Sequence[str] = _NOISY_IMPORTS) -> None:
    """Imports ``modules`` (those installed) with their import-time deprecation warnings ignored.

    Call it before the tool's first import of detectron2 or fvcore; a module imported already is
    not imported again, so its import-time warnings can no longer appear.
    """
    with warnings.catch_warnings():
        for category, message in _IMPORT_TIME_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
