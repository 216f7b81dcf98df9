"""Declared class-name spellings for prompts (``"wall-concrete"`` -> ``"concrete wall"``) and the
one rule for names given twice, applied after the spelling (:func:`check_distinct_class_names`).

Plain Python (no torch): prompts, the ONNX runtime and every vocabulary check share it (the
spellings are re-exported by ``chimeraseg.clip.names``). Why and where the spellings are used:
docs/METHOD.md, 'Inference'.

Only names that a shipped dataset declares a spelling for change; every other name (ADE20K,
PASCAL Context-459's hyphenated names, a custom dataset's, a demo user's words) reaches the text
encoder verbatim, so ``"t-shirt"`` stays ``"t-shirt"``. Declared, per comma-separated synonym:

* COCO-Stuff's rule, for its own hyphenated names: ``"<base>-other"``/``"<base>-stuff"`` drop the
  suffix (``"building-other"`` -> ``"building"``), ``"<base>-<material>"`` becomes
  ``"<material> <base>"`` (``"floor-wood"`` -> ``"wood floor"``), and :data:`SPECIAL_NAMES`
  overrides the names the rule would garble (``"window-blind"``) or leaves joined
  (``"playingfield"``);
* PASCAL's joined words (VOC, Context-59 and -459): ``"tvmonitor"`` -> ``"tv monitor"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES

__all__ = [
    "DECLARED_SPELLINGS",
    "PASCAL_SPELLINGS",
    "SPECIAL_NAMES",
    "check_distinct_class_names",
    "humanize_class_name",
    "split_synonyms",
]

DROPPED_SUFFIXES = ("other", "stuff")

# COCO-Stuff names whose generic rewrite would read badly, or that are joined words.
SPECIAL_NAMES: dict[str, str] = {
    "playingfield": "playing field",
    "waterdrops": "water drops",
    "window-blind": "window blind",
    "ceiling-tile": "ceiling tile",
    "structural-other": "structure",
    "solid-other": "solid",
}
# PASCAL VOC / Context spell these class names as one word.
PASCAL_SPELLINGS: dict[str, str] = {
    "tvmonitor": "tv monitor",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
}


def _coco_stuff_spelling(name: str) -> str:
    """COCO-Stuff's rule for one of its own names (``"wall-concrete"`` -> ``"concrete wall"``)."""
    if name in SPECIAL_NAMES:
        return SPECIAL_NAMES[name]
    if "-" not in name:
        return name
    base, _, detail = name.rpartition("-")
    return base if detail in DROPPED_SUFFIXES else f"{detail} {base}"


def _declared_spellings() -> dict[str, str]:
    """Raw name -> prompt spelling, for every name some dataset declares a spelling for."""
    table = {n: _coco_stuff_spelling(n) for n in COCO_STUFF_171_CLASSES}
    table.update(PASCAL_SPELLINGS)
    return {raw: spelled for raw, spelled in table.items() if spelled != raw}


DECLARED_SPELLINGS = MappingProxyType(_declared_spellings())


def split_synonyms(name: str) -> list[str]:
    """Splits ``"person, people"`` into ``["person", "people"]`` (empty parts are an error).

    Raises:
        ValueError: If a synonym is empty, naming the offending class name.
    """
    parts = [p.strip() for p in name.split(",")]
    if not all(parts):
        raise ValueError(f"class name {name!r} has an empty comma-separated synonym")
    return parts


def humanize_class_name(name: str) -> str:
    """Replaces each comma-separated synonym by its declared spelling, if it has one.

    Args:
        name: Raw class name, e.g. ``"wall-concrete"``, ``"sky-other, sky"`` or ``"post-it"``.

    Returns:
        The synonyms (stripped) joined with ``", "``, e.g. ``"concrete wall"``, ``"sky, sky"`` or
        ``"post-it"`` (no dataset declares a spelling for it).
    """
    return ", ".join(DECLARED_SPELLINGS.get(part, part) for part in split_synonyms(name))


def _words(entry: str) -> list[str]:
    """The comparable words of a class entry: each synonym as given and as prompted (its declared
    spelling, :func:`humanize_class_name`), case and spaces folded."""
    synonyms = [w.strip() for w in entry.split(",")]
    spelled = [DECLARED_SPELLINGS.get(w, w) for w in synonyms]
    return list(dict.fromkeys(" ".join(w.split()).casefold() for w in synonyms + spelled))


def check_distinct_class_names(names: Sequence[str], source: str) -> None:
    """Raises when two classes share a name or a synonym (one of them could never be predicted).

    Names compare without case and with spaces collapsed, as given and after their prompt
    spelling: ``"sofa, couch"`` and ``"couch"`` share ``couch``, ``"sky-other"`` and ``"sky"``
    share ``sky``, ``"wall-concrete"`` and ``"concrete wall"`` share ``concrete wall``. The one
    rule for every vocabulary (demos, web demo, export, name files, export metadata).

    Args:
        names: the class entries (``"sofa, couch"`` = one class with two synonyms).
        source: where they come from, for the message (``"--vocabulary"``, a file name).

    Raises:
        ValueError: naming ``source``, the word and both entries.
    """
    first: dict[str, int] = {}
    for i, entry in enumerate(names):
        for word in _words(str(entry)):
            j = first.setdefault(word, i)
            if j != i:
                raise ValueError(
                    f"{source}: the name {word!r} is given twice, as class {j} ({names[j]!r}) "
                    f"and class {i} ({entry!r}); give each class once (synonyms of one class go "
                    "into one entry, comma-separated: 'sofa, couch')"
                )
