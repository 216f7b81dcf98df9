"""The schema of ``metadata.json``: one table of key -> check, one validation pass at load.

An export folder is untrusted input (docs/SECURITY.md, 'Export folders are untrusted input'):
every value is checked for type, range, finiteness and length here, then for consistency
between keys (ids inside the vocabulary, one colour per class, distinct names). The first
violation is reported as one line naming the key and its value.

Plain Python (no torch, no onnxruntime).
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chimeraseg.deploy.metadata import BAKED_GRAPH, IMAGE_GRAPH, IMAGE_GRAPH_INT8, TEXT_GRAPH
from chimeraseg.deploy.tokenizer import BUILTIN_TOKENIZERS

__all__ = [
    "GAMMA_LIMIT",
    "GRAPH_FILES",
    "INFERENCE_MODES",
    "MAX_CLASSES",
    "METADATA_SCHEMA",
    "MetadataInvalid",
    "check_gamma",
    "check_template",
    "short_repr",
    "validate_metadata",
]

# Every file an export may list; the exporter writes the first two always.
GRAPH_FILES = (IMAGE_GRAPH, TEXT_GRAPH, IMAGE_GRAPH_INT8, BAKED_GRAPH)
INFERENCE_MODES = ("whole", "slide")
MAX_CLASSES = 4096  # ADE20K-847 is the largest shipped vocabulary
MAX_NAME_CHARS = 256  # one class entry (synonyms included)
MAX_TEMPLATES = 256
MAX_TEMPLATE_CHARS = 256
MAX_SIDE = 8192  # image sides, windows and resize targets, in pixels
GAMMA_LIMIT = 1e4  # |γ|: logits are cos / τ with τ >= 1e-3, so |logit| <= 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 6, 4, 2


def short_repr(value: Any) -> str:
    """A bounded, one-line repr of an untrusted value (long or deeply nested values cut)."""
    return _SHORT.repr(value)


class MetadataInvalid(ValueError):
    """A metadata value outside the schema; ``str()`` is one line: key, value, the rule."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        super().__init__(f"{key} = {short_repr(value)}: {rule}")
        self.key = key


# A check raises MetadataInvalid for (key, value) pairs outside its rule.
Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class Integer:
    """An ``int`` (not a bool, not ``32.0``) in ``[low, high]``."""

    low: int
    high: int

    def __call__(self, key: str, value: Any) -> None:
        if type(value) is not int or not self.low <= value <= self.high:
            raise MetadataInvalid(key, value, f"must be an integer in [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Number:
    """A finite ``int`` or ``float`` (not a bool) in ``[low, high]``."""

    low: float
    high: float

    def __call__(self, key: str, value: Any) -> None:
        ok = type(value) in (int, float) and math.isfinite(value)
        if not ok or not self.low <= value <= self.high:
            rule = f"must be a finite number in [{self.low}, {self.high}]"
            raise MetadataInvalid(key, value, rule)


@dataclass(frozen=True)
class OneOf:
    """One of fixed values (compared with their type: ``True`` is not ``1``)."""

    values: tuple[Any, ...]

    def __call__(self, key: str, value: Any) -> None:
        if not any(type(value) is type(v) and value == v for v in self.values):
            raise MetadataInvalid(key, value, f"must be one of {json.dumps(list(self.values))}")


@dataclass(frozen=True)
class Text:
    """A string of ``1..max_chars`` characters, further checked by ``rule`` when given."""

    max_chars: int
    rule: Callable[[str], str | None] | None = None  # returns the broken rule, or None

    def __call__(self, key: str, value: Any) -> None:
        if not isinstance(value, str) or not 0 < len(value) <= self.max_chars:
            raise MetadataInvalid(key, value, f"must be a string of 1 to {self.max_chars} chars")
        problem = self.rule(value) if self.rule else None
        if problem:
            raise MetadataInvalid(key, value, problem)


@dataclass(frozen=True)
class ListOf:
    """A JSON list of ``min_len..max_len`` items, each passing ``item``."""

    item: Check
    min_len: int
    max_len: int

    def __call__(self, key: str, value: Any) -> None:
        if not isinstance(value, list) or not self.min_len <= len(value) <= self.max_len:
            size = f"{self.min_len}"
            size += "" if self.min_len == self.max_len else f" to {self.max_len}"
            raise MetadataInvalid(key, value, f"must be a list of {size} items")
        for i, item in enumerate(value):
            self.item(f"{key}[{i}]", item)


@dataclass(frozen=True)
class Record:
    """A JSON object with exactly ``fields`` (key -> check)."""

    fields: dict[str, Check]

    def __call__(self, key: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise MetadataInvalid(key, value, "must be an object")
        missing, extra = self.fields.keys() - value.keys(), value.keys() - self.fields.keys()
        if missing:
            raise MetadataInvalid(key or "metadata", sorted(missing), "missing keys")
        if extra:
            raise MetadataInvalid(key or "metadata", sorted(map(str, extra)), "unknown keys")
        for name, check in self.fields.items():
            check(f"{key}.{name}" if key else name, value[name])


@dataclass(frozen=True)
class MapOf:
    """A JSON object of at most ``max_len`` entries, its keys and values checked."""

    key_check: Check
    value_check: Check
    max_len: int = 64

    def __call__(self, key: str, value: Any) -> None:
        if not isinstance(value, dict) or len(value) > self.max_len:
            raise MetadataInvalid(key, value, f"must be an object of at most {self.max_len} keys")
        for name, item in value.items():
            self.key_check(f"{key} key", name)
            self.value_check(f"{key}[{short_repr(name)}]", item)


@dataclass(frozen=True)
class Optional:
    """``null`` or a value passing ``inner``."""

    inner: Check

    def __call__(self, key: str, value: Any) -> None:
        if value is not None:
            self.inner(key, value)


def _any_value(key: str, value: Any) -> None:
    """Informational values (source paths, CLIP reference): any JSON value."""


def check_template(template: str) -> str | None:
    """The broken rule of a prompt template, or None: exactly one ``{}`` and no other brace
    (so ``str.format`` substitutes the name and nothing else: no ``{.__class__}``, ``{0.x}``,
    ``{:>9}``)."""
    rest = template.replace("{}", "", 1)
    if "{}" not in template or "{" in rest or "}" in rest:
        return "a template needs exactly one '{}' slot and no other '{' or '}'"
    return None


def _sha256(text: str) -> str | None:
    return None if _SHA256.fullmatch(text) else "must be 64 lowercase hex digits (SHA-256)"


_CLASS_NAME = Text(MAX_NAME_CHARS)
_VOCABULARY = ListOf(_CLASS_NAME, 1, MAX_CLASSES)
_IDS = ListOf(Integer(0, MAX_CLASSES - 1), 0, MAX_CLASSES)
_RGB_MEAN = ListOf(Number(0.0, 255.0), 3, 3)
_RGB_STD = ListOf(Number(1e-3, 255.0), 3, 3)
_SIDE_PAIR = ListOf(Integer(1, MAX_SIDE), 2, 2)

METADATA_SCHEMA = Record(
    {
        "model_id": Text(64, _sha256),
        "source": MapOf(Text(64), _any_value),
        "opset": Integer(1, 10_000),  # the supported opsets are checked before the schema
        "clip": MapOf(Text(64), _any_value),
        "tokenizer": Record(
            {
                "library": OneOf(("open_clip",)),
                "model": OneOf(BUILTIN_TOKENIZERS),
                "context_length": Integer(8, 1024),
            }
        ),
        "templates": ListOf(Text(MAX_TEMPLATE_CHARS, check_template), 1, MAX_TEMPLATES),
        "humanize": OneOf((True, False)),
        "logit_tau": Number(1e-3, 10.0),
        "gamma": Number(-GAMMA_LIMIT, GAMMA_LIMIT),
        "train_vocabulary": _VOCABULARY,
        "seen_ids": _IDS,
        "unseen_ids": _IDS,
        "embed_dim": Integer(1, 8192),
        "pixel_mean": _RGB_MEAN,
        "pixel_std": _RGB_STD,
        "output_stride": OneOf((4,)),
        "size_divisibility": Integer(1, 1024),
        "min_input_size": Integer(1, 1024),
        "test_resize": ListOf(Integer(0, MAX_SIDE), 2, 2),
        "inference": Record(
            {
                "mode": OneOf(INFERENCE_MODES),
                "slide_crop": _SIDE_PAIR,
                "slide_stride": _SIDE_PAIR,
            }
        ),
        "files": MapOf(OneOf(GRAPH_FILES), Text(64, _sha256), len(GRAPH_FILES)),
        "colors": Optional(ListOf(ListOf(Integer(0, 255), 3, 3), 1, MAX_CLASSES)),
        "baked": Optional(Record({"names": _VOCABULARY, "unseen_ids": _IDS})),
        "format": Text(64),
        "format_version": Integer(1, 10_000),
    }
)


def check_gamma(value: Any, source: str = "gamma") -> float:
    """``value`` as the unseen bias γ: a finite number with ``|γ| <= GAMMA_LIMIT``.

    The one rule for γ from every source (metadata, ``--gamma`` of the demos, the runtime API).

    Raises:
        ValueError: naming ``source`` and the value (NaN and infinities label every pixel with
            class 0 or an unseen class, silently).
    """
    try:
        gamma = float(value)
    except (TypeError, ValueError):
        gamma = math.nan
    if type(value) is bool or not math.isfinite(gamma) or abs(gamma) > GAMMA_LIMIT:
        raise ValueError(
            f"{source} {short_repr(value)}: γ must be a finite number in "
            f"[{-GAMMA_LIMIT:g}, {GAMMA_LIMIT:g}]"
        )
    return gamma


def _check_ids(key: str, ids: list[int], count: int, vocabulary_key: str) -> None:
    bad = [i for i in ids if i >= count]
    if bad:
        raise MetadataInvalid(key, ids, f"ids {bad} are outside {vocabulary_key} ({count} names)")
    if len(set(ids)) != len(ids):
        raise MetadataInvalid(key, ids, "an id is listed twice")


def _check_names(key: str, names: list[str]) -> None:
    # Here, not at the top: chimeraseg.data's package imports OpenCV, needed only to validate.
    from chimeraseg.data.spellings import check_distinct_class_names, split_synonyms

    try:
        for name in names:
            split_synonyms(name)
        check_distinct_class_names(names, key)
    except ValueError as e:
        raise MetadataInvalid(key, names, str(e).removeprefix(f"{key}: ")) from e


def _check_consistency(data: dict[str, Any]) -> None:
    """Relations between keys, after every key passed its own check."""
    vocabulary = data["train_vocabulary"]
    _check_names("train_vocabulary", vocabulary)
    for key in ("seen_ids", "unseen_ids"):
        _check_ids(key, data[key], len(vocabulary), "train_vocabulary")
    if set(data["seen_ids"]) & set(data["unseen_ids"]):
        raise MetadataInvalid("unseen_ids", data["unseen_ids"], "a class is both seen and unseen")
    colors = data["colors"]
    if colors is not None and len(colors) != len(vocabulary):
        rule = f"needs one colour per class of train_vocabulary ({len(vocabulary)})"
        raise MetadataInvalid("colors", colors, rule)
    files, baked = data["files"], data["baked"]
    for required in (IMAGE_GRAPH, TEXT_GRAPH):
        if required not in files:
            raise MetadataInvalid("files", files, f"must list {required}")
    if (baked is None) != (BAKED_GRAPH not in files):
        rule = f"must be given exactly when files lists {BAKED_GRAPH}"
        raise MetadataInvalid("baked", baked, rule)
    if baked is not None:
        _check_names("baked.names", baked["names"])
        _check_ids("baked.unseen_ids", baked["unseen_ids"], len(baked["names"]), "baked.names")
    inference = data["inference"]
    for axis, (crop, stride) in enumerate(zip(inference["slide_crop"], inference["slide_stride"])):
        if crop < data["min_input_size"]:
            rule = f"a window below min_input_size ({data['min_input_size']}) cannot run"
            raise MetadataInvalid(f"inference.slide_crop[{axis}]", crop, rule)
        if stride > crop:
            rule = f"a stride above the window ({crop}) leaves pixels without a window"
            raise MetadataInvalid(f"inference.slide_stride[{axis}]", stride, rule)
    short, longest = data["test_resize"]
    if short > 0 and longest < short:
        rule = "[short side, max side]: the max side must be >= the short side (or [0, 0])"
        raise MetadataInvalid("test_resize", data["test_resize"], rule)


def validate_metadata(data: Any) -> None:
    """Checks every key of a parsed ``metadata.json``, then their consistency.

    Raises:
        MetadataInvalid: the first violation (one line naming the key and value).
    """
    METADATA_SCHEMA("", data)
    _check_consistency(data)
