"""Where a tool's outputs go and how they are written (plain Python).

Outputs stay in their folder:

* **Planned before any work** (:func:`plan_outputs`): never over an input, never two outputs on
  one file; an ``--output`` naming a file is refused (:func:`check_output_folder`).
* **Written through a new file and a rename** (:func:`atomic_open`, :func:`atomic_path`): the
  bytes go to a temporary file created (``O_EXCL``) beside the target, which is then renamed over
  it with ``os.replace``. An existing path is never opened for writing, so a symbolic link
  already in the output folder is replaced by the new file, and the file it pointed to is left
  untouched; a kill leaves the old file or the complete new one, never a truncated one.
* **Reported only once on disk** (:func:`confirm_written`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

__all__ = [
    "OutputError",
    "atomic_open",
    "atomic_path",
    "atomic_write_text",
    "check_output_folder",
    "confirm_written",
    "fsync_directory",
    "plan_outputs",
    "refuse_symlink",
    "umask_file_mode",
]


class OutputError(ValueError):
    """An output would replace an input or another output, or was not written; names the file."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def check_output_folder(folder: str, option: str = "--output") -> str:
    """Returns ``folder`` if it is a folder or does not exist yet.

    Raises:
        OutputError: ``folder`` names a file (or anything else that is not a folder).
    """
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{option} {folder} is a file, not a folder; give a folder")
    return folder


def refuse_symlink(path: str, what: str = "output") -> str:
    """Returns ``path`` unless it is a symbolic link (a write through it would leave its folder).

    For the rare outputs that cannot be replaced by a rename (a folder moved into place, a log
    appended to).

    Raises:
        OutputError: naming ``path`` and where it points.
    """
    if os.path.islink(path):
        raise OutputError(
            f"{what} {path} is a symbolic link (to {os.readlink(path)}); remove it or choose "
            "another path: outputs are never written through links"
        )
    return path


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
        OutputError: ``output_dir`` is a file or the folder of an input (outputs would sit among
            the inputs, replace those with the same name and be read as inputs by a rerun), an
            output path is an input, or two inputs (same stem) would write the same file.
    """
    check_output_folder(output_dir)
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


def fsync_directory(directory: str) -> None:
    """Makes a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def umask_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: ``0o666`` less the umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def _new_file_beside(path: str, extension_last: bool) -> tuple[int, str, str]:
    """``(fd, temporary path, folder)``: a new file (``O_EXCL``) in ``path``'s folder named
    ``.<name>.<random>.tmp``, or ``.<name>.<random>.tmp<ext>`` with ``extension_last`` (writers
    such as OpenCV pick the format from the extension)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ext = os.path.splitext(path)[1] if extension_last else ""
    prefix = f".{os.path.basename(path)}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{ext}", dir=directory)
    return fd, tmp, directory


@contextlib.contextmanager
def _renamed_on_success(tmp: str, path: str | os.PathLike, directory: str) -> Iterator[None]:
    """Renames ``tmp`` to ``path`` (and fsyncs ``directory``) when the block succeeds; removes
    ``tmp`` and leaves ``path`` as it was when it raises."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_directory(directory)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Opens a new temporary file beside ``path``; on success it is fsync-ed and renamed to
    ``path`` (which, if it was a symbolic link, is replaced itself: its target is untouched).

    On an exception the temporary file is removed and ``path`` is left as it was. The file gets
    the permissions of the user's umask (:func:`umask_file_mode`), not the temporary file's 0600.

    Args:
        path: final file name.
        mode: ``"wb"`` or ``"w"``.
    """
    fd, tmp, directory = _new_file_beside(os.fspath(path), extension_last=False)
    with _renamed_on_success(tmp, path, directory), os.fdopen(fd, mode) as f:
        yield f
        f.flush()
        os.fchmod(f.fileno(), umask_file_mode())
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a new temporary file name beside ``path`` for writers that take a file name
    (OpenCV, PIL, matplotlib, video writers); on success it is renamed to ``path``.

    The temporary name ends with ``path``'s extension. Like :func:`atomic_open`, ``path`` is never
    opened for writing: a symbolic link there is replaced, not followed.

    Raises:
        OutputError: the writer left the temporary file empty (nothing was written).
    """
    path = os.fspath(path)
    fd, tmp, directory = _new_file_beside(path, extension_last=True)
    os.close(fd)
    with _renamed_on_success(tmp, path, directory):
        yield tmp
        if os.path.getsize(tmp) == 0:
            raise OutputError(f"{path} was not written (is the output folder writable?)")
        os.chmod(tmp, umask_file_mode())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through :func:`atomic_open`."""
    with atomic_open(path, "w") as f:
        f.write(text)
