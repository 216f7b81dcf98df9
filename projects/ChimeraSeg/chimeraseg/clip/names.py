"""Class-name humaniser for prompts: ``"wall-concrete"`` -> ``"concrete wall"``.

Why and where it is used: docs/METHOD.md, 'Inference'.

Rules, applied to each comma-separated synonym:

1. Explicit spellings in :data:`SPECIAL_NAMES` win (``"playingfield"`` -> ``"playing field"``).
2. Underscores become spaces.
3. ``"<base>-other"``/``"<base>-stuff"`` drop the suffix (``"building-other"`` -> ``"building"``).
4. ``"<base>-<material>"`` becomes ``"<material> <base>"`` (``"floor-wood"`` -> ``"wood floor"``).
"""

from __future__ import annotations

__all__ = ["SPECIAL_NAMES", "humanize_class_name", "split_synonyms", "unseen_indices"]

DROPPED_SUFFIXES = ("other", "stuff")

# Names whose generic rewrite would read badly.
SPECIAL_NAMES: dict[str, str] = {
    "playingfield": "playing field",
    "waterdrops": "water drops",
    "window-blind": "window blind",
    "ceiling-tile": "ceiling tile",
    "structural-other": "structure",
    "solid-other": "solid",
    "tvmonitor": "tv monitor",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
}


def _humanize_one(name: str) -> str:
    key = name.strip().lower()
    if key in SPECIAL_NAMES:
        return SPECIAL_NAMES[key]
    words = name.strip().replace("_", " ")
    if "-" in words:
        base, _, detail = words.rpartition("-")
        words = base if detail in DROPPED_SUFFIXES else f"{detail} {base}"
    return " ".join(words.split())


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
    """Humanises each comma-separated synonym of a dataset class name.

    Args:
        name: Raw class name, e.g. ``"wall-concrete"`` or ``"sky-other, sky"``.

    Returns:
        Humanised synonyms joined with ``", "``, e.g. ``"concrete wall"`` or ``"sky, sky"``.
    """
    return ", ".join(_humanize_one(part) for part in split_synonyms(name))


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
        raise ValueError(f"--unseen names {missing} are not in --vocabulary {vocabulary}")
    return sorted({lookup[u.strip()] for u in unseen})
