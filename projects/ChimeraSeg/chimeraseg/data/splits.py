"""Named zero-shot class splits (paper §IV-A): which classes are seen in training, which unseen.

Class lists and the choice between split variants: docs/METHOD.md, 'Data'.

Each split is validated when this module is imported: seen and unseen must be disjoint, together
cover every class exactly once, and index into the class table. A broken table therefore fails at
import with the split's name, never silently in a metric.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from chimeraseg.data.class_tables import (
    ADE20K_150_CLASSES,
    PASCAL_CONTEXT_59_CLASSES,
    PASCAL_VOC_20_CLASSES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_UNSEEN,
    ade20k_847_table,
    make_palette,
    pascal_context_459_classes,
)
from chimeraseg.data.coco_stuff import COCO_STUFF_171_CLASSES, COCO_STUFF_171_COLORS
from chimeraseg.data.spellings import check_distinct_class_names


@dataclass(frozen=True)
class ZeroShotSplit:
    """A class table and its seen/unseen partition.

    Attributes:
        name: Split name, e.g. ``"coco_stuff_171"``.
        variant: Variant of the split (``"zs3"``/``"cascade"`` for PASCAL Context), else ``None``.
        class_names: ``N`` class names; label value ``i`` is ``class_names[i]``.
        seen: Sorted indices of the ``Ns`` seen classes.
        unseen: Sorted indices of the ``Nu`` unseen classes (may be empty, e.g. ADE20K transfer).
        stuff_colors: ``N`` RGB visualisation colours.
    """

    name: str
    variant: str | None
    class_names: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    stuff_colors: tuple[tuple[int, int, int], ...]

    @property
    def num_classes(self) -> int:
        """Number of classes ``N``."""
        return len(self.class_names)

    @property
    def unseen_names(self) -> tuple[str, ...]:
        """Names of the unseen classes, in index order."""
        return tuple(self.class_names[i] for i in self.unseen)


def _make_split(
    name: str,
    variant: str | None,
    class_names: tuple[str, ...],
    unseen: Sequence[int],
    stuff_colors: tuple[tuple[int, int, int], ...],
) -> ZeroShotSplit:
    """Builds a split whose seen classes are all classes that are not unseen."""
    unseen_set = set(unseen)
    seen = tuple(i for i in range(len(class_names)) if i not in unseen_set)
    return ZeroShotSplit(name, variant, class_names, seen, tuple(sorted(unseen)), stuff_colors)


def validate_split(split: ZeroShotSplit) -> None:
    """Checks that a split is a partition of its classes.

    Args:
        split: The split to check.

    Raises:
        ValueError: Naming the split, if indices are out of range or duplicated, seen and unseen
            overlap, some class is in neither, or names/colours/classes have different lengths.
    """
    label = f"split {split.name!r}" + (f" (variant {split.variant!r})" if split.variant else "")
    n = split.num_classes
    if len(set(split.class_names)) != n:
        twice = sorted({c for c in split.class_names if split.class_names.count(c) > 1})
        raise ValueError(f"{label}: duplicate class names {twice} (each class once)")
    if len(split.stuff_colors) != n:
        raise ValueError(f"{label}: {len(split.stuff_colors)} colours for {n} classes")
    for kind, ids in (("seen", split.seen), ("unseen", split.unseen)):
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"{label}: {kind} indices {bad} outside [0, {n})")
        if len(set(ids)) != len(ids):
            raise ValueError(f"{label}: duplicate {kind} indices")
    overlap = sorted(set(split.seen) & set(split.unseen))
    if overlap:
        raise ValueError(f"{label}: indices {overlap} are both seen and unseen")
    missing = sorted(set(range(n)) - set(split.seen) - set(split.unseen))
    if missing:
        raise ValueError(f"{label}: indices {missing} are neither seen nor unseen")


_CONTEXT_COLORS = make_palette(len(PASCAL_CONTEXT_59_CLASSES), seed=59)

# (name, variant) -> split. Variant ``None`` is the default variant of a name.
_SPLITS: dict[tuple[str, str | None], ZeroShotSplit] = {}
_DEFAULT_VARIANT: dict[str, str | None] = {}


def register_split(
    split: ZeroShotSplit, default: bool = True, replace: bool = False
) -> ZeroShotSplit:
    """Adds a split to the registry that :func:`get_split` reads (public: your own splits too).

    Args:
        split: The split, e.g. from :func:`make_zero_shot_split`; it is validated here.
        default: Make ``split.variant`` the default variant of ``split.name``.
        replace: Replace a registered ``(name, variant)``; otherwise that is an error.

    Returns:
        ``split``.

    Raises:
        ValueError: Naming the split, if it is not a partition of its classes or (without
            ``replace``) its ``(name, variant)`` is already registered.
    """
    validate_split(split)
    key = (split.name, split.variant)
    if key in _SPLITS and not replace and _SPLITS[key] != split:
        raise ValueError(
            f"zero-shot split {split.name!r} (variant {split.variant!r}) is already registered "
            "with other classes; pick another name or pass replace=True"
        )
    _SPLITS[key] = split
    if default or split.name not in _DEFAULT_VARIANT:
        _DEFAULT_VARIANT[split.name] = split.variant
    return split


# COCO-Stuff 156 seen / 15 unseen (ZegCLIP / Chimera-Seg protocol).
register_split(
    _make_split(
        "coco_stuff_171",
        variant=None,
        class_names=COCO_STUFF_171_CLASSES,
        unseen=(19, 23, 28, 29, 36, 51, 76, 88, 94, 112, 133, 136, 137, 157, 160),
        stuff_colors=COCO_STUFF_171_COLORS,
    )
)
# PASCAL Context 49 / 10: "zs3" (ZS3Net / MaskCLIP / OTSeg, default) and "cascade" (Cascade-CLIP).
register_split(
    _make_split(
        "pascal_context_59",
        variant="zs3",
        class_names=PASCAL_CONTEXT_59_CLASSES,
        unseen=(0, 6, 7, 14, 19, 24, 31, 33, 48, 54),
        stuff_colors=_CONTEXT_COLORS,
    )
)
register_split(
    _make_split(
        "pascal_context_59",
        variant="cascade",
        class_names=PASCAL_CONTEXT_59_CLASSES,
        unseen=(0, 2, 3, 7, 9, 13, 17, 19, 31, 37),
        stuff_colors=_CONTEXT_COLORS,
    ),
    default=False,
)
# PASCAL VOC 2012 15 / 5: pottedplant, sheep, sofa, train, tvmonitor unseen.
register_split(
    _make_split(
        "voc_20",
        variant=None,
        class_names=PASCAL_VOC_20_CLASSES,
        unseen=(15, 16, 17, 18, 19),
        stuff_colors=make_palette(len(PASCAL_VOC_20_CLASSES), seed=20),
    )
)
# ADE20K-150: cross-dataset transfer only (evaluation), so no class is held out.
register_split(
    _make_split(
        "ade20k_150",
        variant=None,
        class_names=ADE20K_150_CLASSES,
        unseen=(),
        stuff_colors=make_palette(len(ADE20K_150_CLASSES), seed=150),
    )
)
# Cross-dataset transfer vocabularies (evaluation of a model trained elsewhere, e.g. on
# COCO-Stuff): every class is in the vocabulary and none is held out, so only mIoU is reported.
# PASCAL VOC and Context-59 get a "transfer" variant next to their zero-shot splits.
register_split(
    _make_split(
        "voc_20",
        variant="transfer",
        class_names=PASCAL_VOC_20_CLASSES,
        unseen=(),
        stuff_colors=make_palette(len(PASCAL_VOC_20_CLASSES), seed=20),
    ),
    default=False,
)
register_split(
    _make_split(
        "pascal_context_59",
        variant="transfer",
        class_names=PASCAL_CONTEXT_59_CLASSES,
        unseen=(),
        stuff_colors=_CONTEXT_COLORS,
    ),
    default=False,
)
register_split(
    _make_split(
        "pascal_context_459",
        variant=None,
        class_names=pascal_context_459_classes(),
        unseen=(),
        stuff_colors=make_palette(459, seed=459),
    )
)
register_split(
    _make_split(
        "ade20k_847",
        variant=None,
        class_names=tuple(name for _, name in ade20k_847_table()),
        unseen=(),
        stuff_colors=make_palette(847, seed=847),
    )
)
# The bundled synthetic dataset (``chimeraseg.data.synthetic``).
register_split(
    _make_split(
        "synthetic",
        variant=None,
        class_names=SYNTHETIC_CLASSES,
        unseen=SYNTHETIC_UNSEEN,
        stuff_colors=make_palette(len(SYNTHETIC_CLASSES), seed=12),
    )
)


def read_class_names(path: str) -> list[str]:
    """Class names from a text file: one per line, in label order (line ``i`` is label ``i``).

    The project's one reader of name files (``--vocabulary-file`` of every tool, custom
    datasets' ``CLASSES_FILE``). Blank lines and lines starting with ``#``
    are skipped; surrounding spaces are stripped. A line may hold comma-separated synonyms
    (``"sofa, couch"``); it is one class.

    Raises:
        FileNotFoundError: Naming ``path`` when it does not exist.
        ValueError: Naming ``path`` when it holds no name, or a name given twice (see
            :func:`check_distinct_class_names`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class-name file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return parse_class_names(f.read(), f"class-name file {path}")


def parse_class_names(text: str, source: str) -> list[str]:
    """Class names from the text of a name file (:func:`read_class_names`' syntax).

    Args:
        text: The file's (or the web demo's vocabulary box's) contents.
        source: What holds the text, for messages (``"class-name file x.txt"``).

    Raises:
        ValueError: Naming ``source`` when it holds no name, or a name given twice.
    """
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise ValueError(f"{source} holds no class name")
    check_distinct_class_names(names, source)
    return names


def _indices_of(
    names: Sequence[str | int], class_names: Sequence[str], kind: str, split: str
) -> list[int]:
    """Indices of ``names`` (class names, or already indices) in ``class_names``."""
    index = {n: i for i, n in enumerate(class_names)}
    out, unknown = [], []
    for n in names:
        if isinstance(n, int) and not isinstance(n, bool):
            out.append(n)
        elif n in index:
            out.append(index[n])
        else:
            unknown.append(n)
    if unknown:
        raise ValueError(f"split {split!r}: {kind} names {unknown} are not among its classes")
    return out


def make_zero_shot_split(
    name: str,
    class_names: Sequence[str],
    unseen: Sequence[str | int] = (),
    seen: Sequence[str | int] | None = None,
    variant: str | None = None,
    stuff_colors: Sequence[Sequence[int]] | None = None,
) -> ZeroShotSplit:
    """Builds (and validates) a split of your own classes from their names.

    Args:
        name: Split name (``get_split(name)`` after :func:`register_split`).
        class_names: ``N`` names in label order (label value ``i`` is ``class_names[i]``).
        unseen: Unseen classes, by name (or index); empty = evaluation-only vocabulary.
        seen: Seen classes by name (or index); None = every class that is not unseen. When
            given, seen and unseen must together cover every class exactly once.
        variant: Optional variant label of the split.
        stuff_colors: ``N`` RGB colours; None = a fixed palette.

    Raises:
        ValueError: Naming the split and the names, for unknown or duplicate names, or
            overlapping or incomplete seen/unseen lists.
    """
    class_names = tuple(str(n).strip() for n in class_names)
    if not class_names:
        raise ValueError(f"split {name!r}: no class names")
    unseen_ids = _indices_of(unseen, class_names, "unseen", name)
    if seen is None:
        hidden = set(unseen_ids)
        seen_ids = [i for i in range(len(class_names)) if i not in hidden]
    else:
        seen_ids = _indices_of(seen, class_names, "seen", name)
    colors = stuff_colors or make_palette(len(class_names), seed=len(class_names))
    split = ZeroShotSplit(
        name,
        variant,
        class_names,
        tuple(sorted(seen_ids)),
        tuple(sorted(unseen_ids)),
        tuple(tuple(int(v) for v in c) for c in colors),
    )
    validate_split(split)
    return split


def get_split(name: str, variant: str | None = None) -> ZeroShotSplit:
    """Returns a named zero-shot split.

    Args:
        name: ``"coco_stuff_171"``, ``"pascal_context_59"``, ``"voc_20"``, ``"ade20k_150"``,
            ``"pascal_context_459"``, ``"ade20k_847"``, ``"synthetic"``, or a split added with
            :func:`register_split`.
        variant: ``"zs3"``, ``"cascade"`` or ``"transfer"`` for ``"pascal_context_59"``,
            ``"transfer"`` for ``"voc_20"`` (no unseen class); ``None`` picks the default
            variant of ``name``.

    Returns:
        The frozen :class:`ZeroShotSplit`.

    Raises:
        KeyError: Naming the unknown split or variant and the known ones.
    """
    if name not in _DEFAULT_VARIANT:
        raise KeyError(f"unknown zero-shot split {name!r}; known: {sorted(_DEFAULT_VARIANT)}")
    key = (name, _DEFAULT_VARIANT[name] if variant is None else variant)
    if key not in _SPLITS:
        variants = [v for n, v in _SPLITS if n == name]
        raise KeyError(f"unknown variant {variant!r} of split {name!r}; known: {variants}")
    return _SPLITS[key]
