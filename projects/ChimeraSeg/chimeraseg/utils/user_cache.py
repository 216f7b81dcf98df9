"""The user's ChimeraSeg cache folder: the one home of its location (plain Python).

``$CHIMERASEG_CACHE``, else ``$XDG_CACHE_HOME/chimeraseg``, else ``~/.cache/chimeraseg``. It holds
what is computed once per machine and reused by every run and tool: the world CLIP
(:mod:`chimeraseg.world.cache`) and, for configs whose ``MODEL.CLIP.TEXT_CACHE_DIR`` is
:data:`USER_TEXT_CACHE`, the text-embedding cache. Nothing goes to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "TEXT_CACHE_FOLDER",
    "USER_TEXT_CACHE",
    "default_cache_dir",
    "text_cache_dir",
]

CACHE_ENV = "CHIMERASEG_CACHE"
# MODEL.CLIP.TEXT_CACHE_DIR value meaning <the user cache>/<TEXT_CACHE_FOLDER>.
USER_TEXT_CACHE = "user-cache"
TEXT_CACHE_FOLDER = "text_embeddings"


def default_cache_dir() -> Path:
    """``$CHIMERASEG_CACHE``, else ``$XDG_CACHE_HOME/chimeraseg``, else ``~/.cache/chimeraseg``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "chimeraseg"


def text_cache_dir(value: str) -> str | None:
    """The text-embedding cache folder of a ``MODEL.CLIP.TEXT_CACHE_DIR`` value.

    Args:
        value: ``""`` (no on-disk cache), :data:`USER_TEXT_CACHE` (the user cache's
            ``text_embeddings`` folder) or a folder.

    Returns:
        The folder, or None for no cache.
    """
    if not value:
        return None
    if value == USER_TEXT_CACHE:
        return str(default_cache_dir() / TEXT_CACHE_FOLDER)
    return value
