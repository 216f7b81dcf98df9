"""The command-line options that choose a CLIP, declared once for every tool.

``--clip-weights`` means the same in every tool: an open_clip pretrained tag (``openai``) or a
local checkpoint file, the value of ``MODEL.CLIP.PRETRAINED``. ``--clip-name`` is an open_clip
model name or a model-config JSON (``MODEL.CLIP.NAME``). ``--allow-random-clip`` runs a randomly
initialised CLIP, for speed measurements and smoke runs only; it excludes ``--clip-weights``.
Older spellings stay accepted, with a one-line deprecation note on stderr: ``--clip-pretrained``
for ``--clip-weights``, ``--clip-model`` for ``--clip-name``.
"""

from __future__ import annotations

import argparse

from chimeraseg.utils.tool_parser import add_deprecated_alias

__all__ = ["DEFAULT_CLIP_NAME", "add_clip_arguments", "clip_weights"]

# The paper's CLIP: OpenAI's ViT-B/16 (QuickGELU activations, as OpenAI trained it).
DEFAULT_CLIP_NAME = "ViT-B-16-quickgelu"


def add_clip_arguments(
    parser: argparse.ArgumentParser,
    *,
    name: bool,
    default_weights: str | None,
    random_help: str = "random CLIP weights (smoke runs and speed only)",
) -> None:
    """Adds the ``CLIP`` group: ``[--clip-name]``, ``--clip-weights``, ``--allow-random-clip``.

    Args:
        parser: the tool's parser.
        name: also declare ``--clip-name`` (tools whose config file does not name the CLIP).
        default_weights: the weights when neither option is given (None = the tool's config, or
            none at all: see :func:`clip_weights`).
        random_help: what ``--allow-random-clip`` means for this tool.
    """
    group = parser.add_argument_group("CLIP")
    if name:
        group.add_argument(
            "--clip-name",
            dest="clip_name",
            default=DEFAULT_CLIP_NAME,
            help=f"open_clip model name or model-config JSON (default {DEFAULT_CLIP_NAME})",
        )
        add_deprecated_alias(group, "--clip-model", "--clip-name")
    weights = group.add_mutually_exclusive_group()
    default = f" (default {default_weights})" if default_weights else ""
    weights.add_argument(
        "--clip-weights",
        dest="clip_weights",
        metavar="TAG_OR_FILE",
        default=None,
        help=f"open_clip pretrained tag (e.g. openai) or local checkpoint file{default}",
    )
    add_deprecated_alias(weights, "--clip-pretrained", "--clip-weights")
    weights.add_argument("--allow-random-clip", action="store_true", help=random_help)
    parser.set_defaults(clip_default_weights=default_weights)


def clip_weights(args: argparse.Namespace) -> str | None:
    """The weights the parsed options ask for: ``--clip-weights``, else the tool's default.

    Returns:
        A tag or file, or None for random weights (``--allow-random-clip``) or when the tool
        has no default and none was given (the caller then keeps its config's weights or stops).
    """
    if args.allow_random_clip:
        return None
    return args.clip_weights or args.clip_default_weights
