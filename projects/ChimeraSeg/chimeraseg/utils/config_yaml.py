"""Reading YAML config files without running code from them (plain Python, no detectron2).

detectron2's ``CfgNode.merge_from_file`` falls back to ``yaml.unsafe_load`` when a file holds a
Python tag (``!!python/object/apply:eval [...]``), which runs the code the tag names. Every
ChimeraSeg entry point reads configs through :func:`load_config_yaml` first: it parses the file
and each ``_BASE_`` it extends with ``yaml.safe_load`` and refuses any tag naming the file that
holds it. ``_BASE_`` must name local files (no URLs: nothing is downloaded) and may not loop.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

__all__ = ["BASE_KEY", "ConfigFileError", "load_config_yaml"]

# The key of a YAML config that names the file(s) it extends (detectron2 / fvcore convention).
BASE_KEY = "_BASE_"
_URL_PREFIXES = ("http://", "https://", "ftp://", "s3://", "gs://", "manifold://")


class ConfigFileError(ValueError):
    """A config file is refused or cannot be read; the message names the file."""


def _parse_one(path: str) -> dict[str, Any]:
    """Parses one YAML file safely; an empty file is an empty mapping."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigFileError(f"config file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigFileError(f"config file '{path}' is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"config file '{path}' is not UTF-8 text ({e.reason})") from None
    except yaml.constructor.ConstructorError as e:
        where = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigFileError(
            f"refusing config file '{path}': it holds a YAML tag that safe loading does not "
            f"accept{where} ({e.problem}). Tags such as !!python/object can run code when loaded; "
            "write plain values (numbers, strings, lists) instead"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigFileError(f"config file '{path}' is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"config file '{path}' must hold a mapping of keys, not a {type(data).__name__}"
        )
    return data


def _base_paths(path: str, data: dict[str, Any]) -> list[str]:
    """The files that ``data[_BASE_]`` names, resolved relative to ``path``'s directory."""
    value = data[BASE_KEY]
    bases = value if isinstance(value, list) else [value]
    resolved = []
    for base in bases:
        if not isinstance(base, str) or not base:
            raise ConfigFileError(f"config file '{path}': {BASE_KEY} = {value!r} must name files")
        if base.lower().startswith(_URL_PREFIXES):
            raise ConfigFileError(
                f"config file '{path}': {BASE_KEY} '{base}' is a URL; ChimeraSeg reads configs "
                "from local files only (download it and name the local copy)"
            )
        base = os.path.expanduser(base)
        resolved.append(base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base))
    return resolved


def _merge_into(source: dict[str, Any], target: dict[str, Any], path: str) -> None:
    """Merges ``source`` into ``target`` in place (``source`` wins; mappings merge key by key)."""
    for key, value in source.items():
        if isinstance(value, dict) and key in target:
            if not isinstance(target[key], dict):
                raise ConfigFileError(
                    f"config file '{path}': key {key} is a mapping here but a value in a "
                    f"{BASE_KEY} it extends"
                )
            _merge_into(value, target[key], path)
        else:
            target[key] = value


def _load(path: str, chain: tuple[str, ...]) -> dict[str, Any]:
    """:func:`load_config_yaml` with the chain of files that led to ``path`` (loop detection)."""
    real = os.path.realpath(path)
    if real in chain:
        raise ConfigFileError(f"config file '{path}' extends itself through {BASE_KEY}")
    data = _parse_one(path)
    if BASE_KEY not in data:
        return data
    merged: dict[str, Any] = {}
    for base in _base_paths(path, data):
        _merge_into(_load(base, (*chain, real)), merged, path)
    _merge_into({k: v for k, v in data.items() if k != BASE_KEY}, merged, path)
    return merged


def load_config_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a YAML config and the ``_BASE_`` files it extends, without running code.

    Args:
        path: a YAML config file; ``_BASE_`` paths are relative to the file naming them.

    Returns:
        The merged mapping (the file's keys over its bases'), without ``_BASE_``.

    Raises:
        ConfigFileError: naming the file: missing, not UTF-8, invalid YAML, a Python or other
            unsafe tag, not a mapping, a URL or looping ``_BASE_``.
    """
    return _load(os.fspath(path), ())
