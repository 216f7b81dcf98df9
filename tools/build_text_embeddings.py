"""Writes the CLIP text-embedding cache for a dataset's vocabulary (with a progress bar).

The cache is the one :func:`chimeraseg.clip.encode_class_names` reads, so training and evaluation
find the embeddings without running the text encoder again.

Examples::

    python tools/build_text_embeddings.py --split coco_stuff_171 \\
        --clip-weights /path/to/ViT-B-16.pt
    python tools/build_text_embeddings.py --vocabulary-file my_classes.txt --templates single \\
        --clip-weights openai
    python tools/build_text_embeddings.py --split synthetic --allow-random-clip --cache-dir /tmp/tc
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chimeraseg.clip import encode_class_names, load_clip
from chimeraseg.clip.cli import add_clip_arguments, clip_weights
from chimeraseg.clip.templates import TEMPLATE_SETS
from chimeraseg.utils.tool_parser import add_deprecated_alias, tool_parser
from chimeraseg.utils.user_cache import (
    CACHE_ENV,
    TEXT_CACHE_FOLDER,
    USER_TEXT_CACHE,
    text_cache_dir,
)

EXAMPLES = (
    "python tools/build_text_embeddings.py --split coco_stuff_171 --clip-weights openai",
    "python tools/build_text_embeddings.py --vocabulary-file my_classes.txt --templates single "
    "--clip-weights openai",
)


def read_names_file(path: Path) -> list[str]:
    """``--vocabulary-file``: :func:`chimeraseg.data.splits.read_class_names`, the one reader of
    name files (one class per line, commas separate synonyms, blank and ``#`` lines skipped)."""
    from chimeraseg.data.splits import read_class_names  # lazy, as split_names

    try:
        return read_class_names(str(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--vocabulary-file: {e}") from None
    except ValueError as e:
        raise ValueError(f"--vocabulary-file: {e}") from None


def split_names(split: str, variant: str | None) -> list[str]:
    """Class names of a zero-shot split from :func:`chimeraseg.data.splits.get_split`."""
    from chimeraseg.data.splits import get_split  # lazy: optional for --vocabulary-file

    return list(get_split(split, variant).class_names)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = tool_parser(__doc__.split("\n")[0], EXAMPLES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", help="zero-shot split name, e.g. coco_stuff_171")
    source.add_argument(
        "--vocabulary-file", type=Path, metavar="FILE", help="class names, one a line"
    )
    add_deprecated_alias(source, "--names-file", "--vocabulary-file")
    parser.add_argument("--split-variant", default=None, help="split variant, e.g. zs3 or cascade")
    add_deprecated_alias(parser, "--variant", "--split-variant")
    add_clip_arguments(parser, name=True, default_weights="openai")
    parser.add_argument(
        "--templates",
        action="append",
        default=None,
        help=f"template set ({', '.join(sorted(TEMPLATE_SETS))}); repeat to build several "
        "(default: imagenet80+scene)",
    )
    parser.add_argument(
        "--cache-dir",
        default=USER_TEXT_CACHE,
        help=f"cache folder (default {USER_TEXT_CACHE!r}: the user cache's {TEXT_CACHE_FOLDER} "
        f"folder, ${CACHE_ENV} or ~/.cache/chimeraseg, which configs with "
        f"MODEL.CLIP.TEXT_CACHE_DIR {USER_TEXT_CACHE} read)",
    )
    parser.add_argument("--no-humanize", action="store_true", help="use class names verbatim")
    parser.add_argument("--device", default="cpu", help="device of the text encoder (default cpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = (
        read_names_file(args.vocabulary_file)
        if args.vocabulary_file
        else split_names(args.split, args.split_variant)
    )
    clip_model = load_clip(
        args.clip_name,
        clip_weights(args),
        allow_random_init=args.allow_random_clip,
        device=args.device,
    )
    cache_dir = text_cache_dir(args.cache_dir)
    for templates in args.templates or ["imagenet80+scene"]:
        embeddings = encode_class_names(
            clip_model,
            names,
            templates=templates,
            cache_dir=cache_dir,
            humanize=not args.no_humanize,
            progress=True,
        )
        print(f"{templates}: {tuple(embeddings.shape)} embeddings cached in {cache_dir}")
    return 0


if __name__ == "__main__":
    from chimeraseg.utils.cli import run_tool

    run_tool(main, "tools/build_text_embeddings.py")
