"""Where a tool's outputs go: never over an input, never two outputs on one file, and only files
that exist are reported (plain Python).

Every tool that turns input files into output files (the demo's overlays, label PNGs and
videos) plans its output paths with :func:`plan_outputs` before any work, and confirms each
file with :func:`confirm_written` before it reports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["OutputError", "confirm_written", "plan_outputs"]


class OutputError(ValueError):
    """An output would replace an input or another output, or was not written; names the file."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def plan_outputs(
    inputs: Sequence[str], output_dir: str, suffixes: Sequence[str]
) -> list[dict[str, str]]:
    """The output files of each input: ``<output_dir>/<input stem><suffix>`` per suffix.

    Args:
        inputs: input files, in order.
        output_dir: the output folder.
        suffixes: what each input writes, e.g. ``(".png", "_labels.png")``.

    Returns:
        Per input, ``{suffix: path}``.

    Raises:
        OutputError: ``output_dir`` is the folder of an input (outputs would sit among the
            inputs, replace those with the same name and be read as inputs by a rerun), an
            output path is an input, or two inputs (same stem) would write the same file.
    """
    out_real = _real(output_dir)
    input_real = {_real(p): p for p in inputs}
    for real, path in input_real.items():
        if os.path.dirname(real) == out_real:
            raise OutputError(
                f"--output {output_dir} is the folder of the input {path}: the outputs would "
                "replace inputs of the same name; give another output folder"
            )
    plans, writers = [], {}
    for path in inputs:
        stem = os.path.splitext(os.path.basename(path))[0]
        plan = {s: os.path.join(output_dir, stem + s) for s in suffixes}
        for target in plan.values():
            real = _real(target)
            if real in input_real:
                raise OutputError(f"output {target} would replace the input {input_real[real]}")
            if real in writers and writers[real] != path:
                raise OutputError(
                    f"inputs {writers[real]} and {path} would both write {target} (same file "
                    "name stem); rename one or run them with separate --output folders"
                )
            writers[real] = path
        plans.append(plan)
    return plans


def confirm_written(path: str) -> str:
    """Returns ``path`` if it is a non-empty file, else raises: a tool reports only real files.

    Raises:
        OutputError: naming ``path``.
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise OutputError(f"{path} was not written (is the output folder writable?)")
    return path
