"""The CLIP tokenizer of an export: described by the exporter, rebuilt by the runtime.

The runtime imports open_clip (and with it torch) only here, only when it embeds a vocabulary;
an export with a baked vocabulary needs neither.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

__all__ = ["TokenizeFn", "build_tokenizer", "tokenizer_spec"]

# Maps prompts to ``(P, L)`` int64 token ids.
TokenizeFn = Callable[[list[str]], np.ndarray]


def tokenizer_spec(tokenizer: Any, model_name: str | None) -> dict[str, Any]:
    """Describes the tokenizer that made a model's text embeddings (metadata ``tokenizer``).

    Args:
        tokenizer: open_clip's ``SimpleTokenizer`` or ``tokenize`` partial (the default BPE), or
            another open_clip tokenizer of a registered model.
        model_name: the open_clip model name the latter is looked up by.

    Returns:
        ``{"library": "open_clip", "model": None for the default BPE else model_name,
        "context_length": L}``.
    """
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, partial):
        return {"library": "open_clip", "model": None, **tokenizer.keywords}
    length = int(tokenizer.context_length)
    default = type(tokenizer) is SimpleTokenizer
    return {
        "library": "open_clip",
        "model": None if default else model_name,
        "context_length": length,
    }


def build_tokenizer(spec: dict[str, Any], source: str) -> TokenizeFn:
    """The tokenizer of ``spec`` as a function returning numpy token ids.

    Raises:
        ExportError: naming ``source`` (the metadata file) when open_clip is missing or does not
            know the model.
    """
    from chimeraseg.deploy.metadata import ExportError

    try:
        import open_clip
    except ImportError as e:
        raise ExportError(
            f"{source}: embedding a vocabulary needs the CLIP tokenizer (open_clip_torch, pinned "
            "in requirements/ci.txt); or export with --vocabulary and use the baked graph"
        ) from e
    length = int(spec["context_length"])
    if spec.get("model") is None:
        tokenize = partial(open_clip.tokenize, context_length=length)
    elif open_clip.get_model_config(spec["model"]) is None:
        raise ExportError(
            f"{source}: open_clip does not know the tokenizer model {spec['model']!r}"
        )
    else:
        tokenize = open_clip.get_tokenizer(spec["model"], context_length=length)
    return lambda prompts: tokenize(prompts).numpy().astype(np.int64)  # (P, L)
