"""The repository explains the method itself: no citation of documents that are not in it.

Comments, docstrings and Markdown cite the paper (§, eq., Table) or ``docs/METHOD.md``. They must
not cite an external specification ("SPEC §1.4", "SPEC 5", "(SPEC option)", "shared/SPEC.md") or
a tracker's "issue item", since a reader of the repository cannot open either. The scan is static:
it reads text files and imports nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()

# Scanned: these trees and the top-level pages.
SCANNED_DIRS = ("projects", "configs", "tools", "datasets", "tests", "docs", "requirements")
SCANNED_FILES = ("README.md", "INSTALL.md", "GETTING_STARTED.md", "MODEL_ZOO.md", "setup.py")
TEXT_SUFFIXES = {".py", ".md", ".rst", ".txt", ".yaml", ".yml", ".json", ".toml", ".cfg", ".sh"}
# Generated or cached trees: build metadata, byte code, the generated synthetic dataset.
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache", "synthetic_zs"}

# Word boundaries keep real identifiers such as ``SPECIAL_NAMES`` (clip/names.py) out: "SPEC"
# must be a whole word, so "SPECIAL" and "SPEC_X" never match.
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "'SPEC §…'": re.compile(r"\bSPEC\s*§"),
    "'SPEC <digit>'": re.compile(r"\bSPEC \d"),
    "'shared/SPEC'": re.compile(r"shared/SPEC"),
    "'issue item'": re.compile(r"\bissue items?\b", re.IGNORECASE),
    "the bare word 'SPEC'": re.compile(r"\bSPEC\b"),
}


def _scanned_files() -> list[Path]:
    """Text files of the scanned trees (minus generated ones and this file), sorted."""
    files = [REPO / name for name in SCANNED_FILES if (REPO / name).is_file()]
    for top in SCANNED_DIRS:
        for path in (REPO / top).rglob("*"):
            if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
                continue
            parts = path.relative_to(REPO).parts
            if any(p in SKIPPED_PARTS or p.endswith(".egg-info") for p in parts):
                continue
            if path.resolve() != THIS_FILE:
                files.append(path)
    return sorted(files)


def _violations(text: str) -> list[tuple[int, str, str]]:
    """``(line number, pattern description, line)`` for every forbidden citation in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for description, pattern in FORBIDDEN.items():
            if pattern.search(line):
                found.append((number, description, line.strip()))
                break
    return found


def test_patterns_spare_real_identifiers():
    """``SPECIAL_NAMES`` and similar identifiers are not citations; the citation forms are."""
    assert _violations("SPECIAL_NAMES: dict[str, str] = {}\nx = SPEC_TABLE\nspec = 1") == []
    for cited in ("(SPEC §1.4)", "see SPEC 5", "(SPEC option)", "shared/SPEC.md", "Issue item 5"):
        assert _violations(cited), cited


def test_scan_covers_the_method_sources():
    """Guards the scan itself: the package, the docs and the READMEs are among the files."""
    scanned = {p.relative_to(REPO).as_posix() for p in _scanned_files()}
    for expected in (
        "README.md",
        "docs/METHOD.md",
        "datasets/README.md",
        "projects/ChimeraSeg/README.md",
        "projects/ChimeraSeg/chimeraseg/clip/names.py",
        "tools/train_net.py",
    ):
        assert expected in scanned, expected
    assert "tests/test_self_contained.py" not in scanned


def test_no_citation_of_documents_outside_the_repository():
    """No file cites the external specification or an issue item (see the module docstring)."""
    problems = []
    for path in _scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, description, line in _violations(text):
            problems.append(f"{path.relative_to(REPO)}:{number}: {description}: {line}")
    assert not problems, (
        "cite the paper (§, eq., Table) or docs/METHOD.md instead of:\n" + "\n".join(problems)
    )
