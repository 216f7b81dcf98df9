"""The user-facing Markdown pages the documentation tests read (one list for every docs test)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FRONT_PAGES = ("README.md", "INSTALL.md", "GETTING_STARTED.md", "MODEL_ZOO.md")
GUIDES = ("tools/README.md", "datasets/README.md", "projects/ChimeraSeg/README.md")
PAGES = sorted({*(REPO / name for name in FRONT_PAGES + GUIDES), *(REPO / "docs").glob("*.md")})


def relative_path(path: Path) -> str:
    """``path`` relative to the repository, with forward slashes."""
    return path.relative_to(REPO).as_posix()
