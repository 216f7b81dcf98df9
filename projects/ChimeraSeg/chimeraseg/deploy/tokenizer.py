"""The CLIP tokenizer of an export: described by the exporter, rebuilt by the runtime.

The runtime imports open_clip (and with it torch) only here, only when it embeds a vocabulary;
an export with a baked vocabulary needs neither.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

__all__ = ["BUILTIN_TOKENIZERS", "TokenizeFn", "build_tokenizer", "tokenizer_spec"]

# The tokenizers a runtime rebuilds, by metadata ``tokenizer.model``: null = open_clip's CLIP BPE,
# whose vocabulary ships inside the package (no download, no file outside the package).
BUILTIN_TOKENIZERS = (None,)

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

    Only the built-in tokenizer is rebuilt: open_clip's CLIP BPE, whose vocabulary ships inside
    the package (``"model": null``). A model name would let ``metadata.json`` make open_clip
    download (``"hf-hub:..."``) or read a folder anywhere (``"local-dir:..."``): refused.

    Raises:
        ExportError: naming ``source`` (the metadata file) when open_clip is missing or the spec
            names another tokenizer.
    """
    from chimeraseg.deploy.metadata import ExportError

    if spec.get("model") not in BUILTIN_TOKENIZERS:
        raise ExportError(
            f"{source}: tokenizer.model {str(spec['model'])[:80]!r} is not a built-in tokenizer "
            "(the built-in one is null: open_clip's CLIP BPE)"
        )
    try:
        import open_clip
    except ImportError as e:
        raise ExportError(
            f"{source}: embedding a vocabulary needs the CLIP tokenizer (open_clip_torch, pinned "
            "in requirements/ci.txt); or export with --vocabulary and use the baked graph"
        ) from e
    tokenize = partial(open_clip.tokenize, context_length=int(spec["context_length"]))
    return lambda prompts: tokenize(prompts).numpy().astype(np.int64)  # (P, L)
