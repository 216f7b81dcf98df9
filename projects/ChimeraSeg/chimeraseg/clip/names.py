"""Class names for prompts: declared spellings, synonyms and the names marked unseen.

The spellings (``"wall-concrete"`` -> ``"concrete wall"``) and their rule live in
:mod:`chimeraseg.data.spellings` (no torch, so the ONNX runtime and the class-name checks use them
too); why and where they are used: docs/METHOD.md, 'Inference'.
"""

from __future__ import annotations

from chimeraseg.data.spellings import (
    DECLARED_SPELLINGS,
    SPECIAL_NAMES,
    humanize_class_name,
    split_synonyms,
)

__all__ = [
    "DECLARED_SPELLINGS",
    "SPECIAL_NAMES",
    "humanize_class_name",
    "split_synonyms",
    "unseen_indices",
]


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
