"""The demos' vocabulary syntax: classes, synonyms and the names marked unseen.

Two spellings of one vocabulary, as ``tools/demo.py`` accepts them:

* ``--vocabulary "cat,grass,sky"``: comma-separated classes (:func:`split_names`);
* a vocabulary file or the web demo's box: one class per line, ``"sofa, couch"`` = one class with
  two synonyms, ``#`` comments (:func:`~chimeraseg.data.splits.parse_class_names`).

Unseen names (``--unseen``, the web demo's unseen box) are comma-separated and may be any synonym
of an entry (:func:`~chimeraseg.clip.names.unseen_indices`); the unseen classes receive the
evaluator's γ bias.
"""

from __future__ import annotations

from chimeraseg.clip.names import split_synonyms, unseen_indices
from chimeraseg.data.splits import parse_class_names

__all__ = ["parse_vocabulary", "split_names"]


def split_names(text: str | None) -> list[str] | None:
    """Comma-separated names; None when the option is absent ([] when it holds no name)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def parse_vocabulary(
    text: str, unseen_text: str, max_classes: int, source: str = "the vocabulary"
) -> tuple[list[str], list[int]]:
    """Parses a vocabulary text (one class per line) and its unseen names.

    Args:
        text: Vocabulary-file syntax: one class per line, commas between synonyms.
        unseen_text: Comma-separated names of ``text`` marked unseen ("" = none).
        max_classes: The most classes accepted.
        source: What holds ``text``, for messages.

    Returns:
        ``(names, unseen ids)``.

    Raises:
        ValueError: An empty vocabulary, more than ``max_classes`` classes, a name given twice
            after its prompt spelling
            (:func:`~chimeraseg.data.spellings.check_distinct_class_names`), an empty synonym,
            or an unseen name outside the vocabulary (each message names it).
    """
    names = parse_class_names(text or "", source)
    if len(names) > max_classes:
        raise ValueError(f"{source} has {len(names)} classes; at most {max_classes} are allowed")
    for name in names:
        split_synonyms(name)  # raises for "a,,b"
    return names, unseen_indices(names, split_names(unseen_text) or [])
