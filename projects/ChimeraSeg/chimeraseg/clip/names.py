"""Declared class-name spellings for prompts: ``"wall-concrete"`` -> ``"concrete wall"``.

Why and where it is used: docs/METHOD.md, 'Inference'.

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

from types import MappingProxyType

from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES

__all__ = [
    "DECLARED_SPELLINGS",
    "SPECIAL_NAMES",
    "humanize_class_name",
    "split_synonyms",
    "unseen_indices",
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


def unseen_indices(vocabulary: list[str], unseen: list[str]) -> list[int]:
    """Indices of the ``unseen`` names in ``vocabulary``; a name may be any synonym of an entry.

    ``"couch"`` marks the entry ``"sofa, couch"`` as unseen, as does the whole entry.

    Raises:
        ValueError: naming the unseen names that match no entry.
    """
    lookup: dict[str, int] = {}
    for i, entry in enumerate(vocabulary):
        for name in (entry, *split_synonyms(entry)):
            lookup.setdefault(name.strip(), i)
    missing = [u for u in unseen if u.strip() not in lookup]
    if missing:
        raise ValueError(f"unseen names {missing} are not in the vocabulary {vocabulary}")
    return sorted({lookup[u.strip()] for u in unseen})
