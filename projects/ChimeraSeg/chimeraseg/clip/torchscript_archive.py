"""Reading a TorchScript archive's state dict without running anything stored in the archive.

OpenAI distributes CLIP as TorchScript archives (``torch.jit.save``): a zip holding
``<root>/data.pkl`` (the pickled module tree), ``<root>/data/<key>`` (raw tensor storages) and
``<root>/code/**.py`` (the TorchScript source of every module class). ``torch.jit.load`` compiles
that source and unpickles ``data.pkl`` with the full pickle machinery, so a crafted archive is a
second way to run code from a user-supplied file. This reader parses the same files as data only:

* ``data.pkl`` is read by :class:`_RestrictedUnpickler`, which resolves only tensor rebuild
  functions, storage types, ``collections.OrderedDict``, TorchScript's list / type-tag helpers
  (replaced by plain functions of this module) and ``__torch__.*`` module classes (replaced by an
  inert record of their attributes). Any other global is refused before anything is called.
* storages are the raw bytes of ``<root>/data/<key>`` (little-endian), never unpickled;
* the parameter and buffer names of each class are read as string literals from the
  ``__parameters__`` / ``__buffers__`` lines of ``code/``; the code is never executed.

The result equals ``torch.jit.load(path).state_dict()`` (parameters and buffers, dotted names).
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["TorchScriptArchiveError", "is_torchscript_archive", "read_torchscript_state_dict"]

# Legacy typed-storage class names written by the TorchScript pickler -> element dtype.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
_MAX_MODULE_DEPTH = 64
_CLASS_RE = re.compile(r"^class\s+(\w+)\s*\(", re.MULTILINE)
_NAMES_RE = r"{}\s*=\s*\[([^\]]*)\]"


class TorchScriptArchiveError(ValueError):
    """The archive is malformed or holds something other than tensors and module records."""


class _StorageType:
    """Marker returned for ``torch.<Type>Storage`` globals: only its dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _ModuleRecord:
    """Inert stand-in for a pickled TorchScript module: its class name and attribute dict."""

    qualified_name = ""
    state: Any = None  # set by pickle's BUILD (``__setstate__``); NEWOBJ skips ``__init__``

    def __init__(self, *args: Any) -> None:
        self.state = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """A strided view of a flat storage tensor; arguments are type-checked first.

    Args:
        storage: ``(numel,)`` flat tensor built by the unpickler's ``persistent_load``.
        offset: element offset of the view.
        size: view shape.
        stride: view strides.
        rest: ``requires_grad``, ``backward_hooks`` (must be empty) and optional metadata of
            ``torch._utils._rebuild_tensor_v2``; ignored otherwise.
    """
    ints = (offset, *tuple(size), *tuple(stride))
    if not isinstance(storage, torch.Tensor) or not all(type(v) is int for v in ints):
        raise TorchScriptArchiveError("malformed tensor record in data.pkl")
    hooks = rest[1] if len(rest) > 1 else None
    if hooks:
        raise TorchScriptArchiveError("tensor record in data.pkl carries backward hooks")
    try:
        return torch.as_strided(storage, tuple(size), tuple(stride), offset)
    except RuntimeError as e:
        raise TorchScriptArchiveError(f"tensor record outside its storage: {e}") from e


def _identity(value: Any, *_: Any) -> Any:
    """Stand-in for ``torch.jit._pickle.build_*list`` / ``restore_type_tag``: returns the value."""
    return value


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("collections", "OrderedDict"): OrderedDict,
    **{
        ("torch.jit._pickle", name): _identity
        for name in (
            "build_intlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
            "restore_type_tag",
        )
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` admitting only the globals of ``_ALLOWED_FUNCTIONS``, storage
    types and ``__torch__`` module classes; storages are read from the archive as raw bytes.
    """

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._root = archive, root
        self._names = set(archive.namelist())
        self._storages: dict[str, torch.Tensor] = {}
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._classes:
                attrs = {"qualified_name": qualified}
                self._classes[qualified] = type(name, (_ModuleRecord,), attrs)
            return self._classes[qualified]
        raise TorchScriptArchiveError(
            f"data.pkl refers to '{module}.{name}', which is refused: only tensors, storages and "
            "module records are read"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        """``("storage", <Type>Storage, key, location, numel)`` -> ``(numel,)`` flat tensor."""
        ok = isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
        if not ok or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str):
            raise TorchScriptArchiveError(f"unsupported persistent id {pid!r:.100}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: Any) -> torch.Tensor:
        member = f"{self._root}/data/{key}"
        if member not in self._names or type(numel) is not int or numel < 0:
            raise TorchScriptArchiveError(f"storage '{member}' is missing or malformed")
        data = self._archive.read(member)
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(data) != numel * itemsize:
            raise TorchScriptArchiveError(
                f"storage '{member}' has {len(data)} bytes, expected {numel} x {itemsize}"
            )
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(data), dtype=dtype)


def is_torchscript_archive(path: str | Path) -> bool:
    """True for a zip holding ``<root>/constants.pkl`` or ``<root>/code/`` (TorchScript)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _archive_root(archive: zipfile.ZipFile) -> str:
    """The single top-level folder holding ``data.pkl``."""
    roots = [n[: -len("/data.pkl")] for n in archive.namelist() if n.endswith("/data.pkl")]
    roots = [r for r in roots if r and "/" not in r]
    if len(roots) != 1:
        raise TorchScriptArchiveError(f"expected one '<root>/data.pkl', found {roots}")
    byteorder = f"{roots[0]}/byteorder"
    if byteorder in archive.namelist():
        order = archive.read(byteorder).decode("ascii", "replace").strip()
        if order != sys.byteorder:
            raise TorchScriptArchiveError(f"{order}-endian storages are not supported")
    return roots[0]


def _class_declarations(
    archive: zipfile.ZipFile, root: str
) -> dict[str, tuple[list[str], list[str]]]:
    """``{qualified class name: (parameter names, buffer names)}`` read from ``code/`` as text."""
    prefix, out = f"{root}/code/", {}
    for member in archive.namelist():
        if not (member.startswith(prefix) and member.endswith(".py")):
            continue
        module = member[len(prefix) : -len(".py")].replace("/", ".")
        text = archive.read(member).decode("utf-8", "replace")
        starts = [m.start() for m in _CLASS_RE.finditer(text)] + [len(text)]
        for begin, end in zip(starts[:-1], starts[1:]):
            body = text[begin:end]
            name = _CLASS_RE.match(body).group(1)
            names = (_declared(body, "__parameters__"), _declared(body, "__buffers__"))
            out[f"{module}.{name}"] = names
    return out


def _declared(class_body: str, attribute: str) -> list[str]:
    """The string literals of ``attribute = ["a", "b", ]`` in a class body ([] if absent)."""
    match = re.search(_NAMES_RE.format(attribute), class_body)
    return re.findall(r'"([^"]*)"', match.group(1)) if match else []


def _collect(
    record: _ModuleRecord,
    declarations: dict[str, tuple[list[str], list[str]]],
    prefix: str = "",
    depth: int = 0,
) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``record`` and its submodules, in ``state_dict`` order."""
    if depth > _MAX_MODULE_DEPTH:
        raise TorchScriptArchiveError(f"module tree deeper than {_MAX_MODULE_DEPTH} at '{prefix}'")
    if record.qualified_name not in declarations:
        raise TorchScriptArchiveError(f"class '{record.qualified_name}' is not declared in code/")
    state = record.state if isinstance(record.state, dict) else {}
    params, buffers = declarations[record.qualified_name]
    out = {
        prefix + name: state[name]
        for name in (*params, *buffers)
        if isinstance(state.get(name), torch.Tensor)
    }
    for name, value in state.items():
        if isinstance(value, _ModuleRecord):
            out.update(_collect(value, declarations, f"{prefix}{name}.", depth + 1))
    return out


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads the parameters and buffers of a TorchScript archive as a state dict.

    Nothing stored in the archive is executed (see the module docstring).

    Args:
        path: a ``torch.jit.save`` archive, e.g. OpenAI's ``ViT-B-16.pt``.

    Returns:
        ``{dotted name: tensor}`` as ``torch.jit.load(path).state_dict()`` would return.

    Raises:
        TorchScriptArchiveError: naming the file, for a malformed archive, a refused global or a
            malformed storage record.
        pickle.UnpicklingError: for a malformed ``data.pkl``.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(archive)
            declarations = _class_declarations(archive, root)
            top = _RestrictedUnpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
        if not isinstance(top, _ModuleRecord):
            raise TorchScriptArchiveError("data.pkl does not hold a TorchScript module")
        return _collect(top, declarations)
    except TorchScriptArchiveError as e:
        raise TorchScriptArchiveError(f"TorchScript archive '{path}': {e}") from None
