"""The user-facing Markdown cannot rot: its commands, paths, links and shared numbers are checked.

Every shell command in a fenced block of the pages below is read. A ``python tools/…`` /
``python datasets/…`` (or ``torchrun … tools/train_net.py``) must name an existing script and use
only options that the script's ``--help`` lists; a ``make X`` an existing target (and variables the
Makefile declares); a ``pip install -r F`` an existing file; every ``configs/…`` path an existing
file. Relative links must reach an existing page and heading. Numbers quoted on several pages
agree: ``test_docs_numbers.py``.

The ``--help`` texts are collected once per session, in one interpreter (the scripts are run with
``runpy`` as ``__main__``), so that torch and detectron2 are imported once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from chimeraseg_test_utils import HAS_DETECTRON2, REQUIRE_DETECTRON2_ENV
from docs_pages import PAGES, REPO
from docs_pages import relative_path as _relative

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", ""}
# In blocks without a language (file trees, diagrams), only lines starting so are commands.
COMMAND_WORDS = {"python", "python3", "torchrun", "make", "bash", "pip"}
PYTHONS = {"python", "python3", "python3.11", ".venv/bin/python"}
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
SHELL_KEYWORDS = {"do", "done", "then", "else", "fi"}
# Files the pages ask the reader to create (not in the repository).
READER_FILES = {"configs/my_data/chimeraseg_mitb0.yaml"}
CONFIG_PATH = re.compile(r"configs/[\w./*-]+\.(?:yaml|json)")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
HTML_ANCHOR = re.compile(r'<a (?:id|name)="([\w-]+)"')
MAKEFILE = REPO / "Makefile"
HELP_DRIVER = """
import contextlib, io, json, os, runpy, sys, traceback
results = {}
for script in sys.argv[1:]:
    out, code = io.StringIO(), 0
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv, sys.path = [script, "--help"], [os.path.dirname(os.path.abspath(script))] + sys.path
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    sys.argv, sys.path = saved_argv, saved_path
    results[script] = [code, out.getvalue()]
print("HELP-JSON " + json.dumps(results))
"""


@dataclass(frozen=True)
class Command:
    """One simple command of a page: where it is written and its words."""

    page: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.words)}"


def _fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """``(language, first line number, lines)`` of every fenced code block."""
    blocks, language, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if language is None:
                language, start, body = stripped[3:].strip().lower(), number + 1, []
            else:
                blocks.append((language, start, body))
                language = None
        elif language is not None:
            body.append(line)
    return blocks


def _logical_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with their backslash continuations joined, ``$ `` prompts removed."""
    joined, pending, first = [], "", start
    for offset, line in enumerate(lines):
        if not pending:
            first = start + offset
            line = line.strip()
            line = line[2:] if line.startswith("$ ") else line
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((first, pending + line.strip()))
        pending = ""
    return joined


def _segments(line: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``;``, ``|`` ...), comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            segments.append(current)
            current = []
        elif not current and token in SHELL_KEYWORDS:
            continue
        else:
            current.append(token)
    segments.append(current)
    return [s for s in segments if s]


def _expand_loops(segments: list[list[str]], loops: dict[str, list[str]]) -> list[list[str]]:
    """Records ``for VAR in a b c`` and substitutes ``${VAR}`` / ``$VAR`` in later segments."""
    expanded = []
    for words in segments:
        if words[0] == "for" and len(words) > 3 and words[2] == "in":
            loops[words[1]] = words[3:]
            continue
        variants = [words]
        for name, values in loops.items():
            pattern = re.compile(r"\$\{" + name + r"\}|\$" + name + r"\b")
            if any(pattern.search(w) for w in words):
                variants = [[pattern.sub(v, w) for w in variant] for variant in variants
                            for v in values]  # fmt: skip
        expanded.extend(variants)
    return expanded


def _page_commands(page: Path) -> list[Command]:
    return _text_commands(page.read_text(), _relative(page))


def _text_commands(text: str, page: str) -> list[Command]:
    """The simple commands of the shell blocks of a Markdown text."""
    commands = []
    for language, start, lines in _fenced_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        loops: dict[str, list[str]] = {}
        for number, line in _logical_lines(lines, start):
            if not line or line.startswith("#"):
                continue
            if language == "" and line.split()[0] not in COMMAND_WORDS:
                continue
            for words in _expand_loops(_segments(line), loops):
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                    words = words[1:]  # environment assignments
                if words:
                    commands.append(Command(page, number, tuple(words)))
    return commands


ALL_COMMANDS = [c for page in PAGES for c in _page_commands(page)]


def _script_call(command: Command) -> tuple[str, tuple[str, ...]] | None:
    """``(script, arguments)`` of a ``python script.py …`` or ``torchrun … script.py …``."""
    words = command.words
    if words[0] in PYTHONS and len(words) > 1 and not words[1].startswith("-"):
        return words[1], words[2:]
    if words[0] == "torchrun":
        for i, word in enumerate(words):
            if word.endswith(".py"):
                return word, words[i + 1 :]
    return None


SCRIPT_CALLS = [(c, *call) for c in ALL_COMMANDS if (call := _script_call(c))]
CHECKED_SCRIPTS = sorted(
    {s for _, s, _ in SCRIPT_CALLS if s.startswith(("tools/", "datasets/")) and (REPO / s).exists()}
)


@pytest.fixture(scope="session")
def help_texts() -> dict[str, tuple[int, str]]:
    """``{script: (exit code, --help output)}`` of every script the pages call, run once."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, *CHECKED_SCRIPTS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    marker = [line for line in result.stdout.splitlines() if line.startswith("HELP-JSON ")]
    assert marker, f"--help driver failed:\n{result.stderr[-3000:]}"
    texts = {k: tuple(v) for k, v in json.loads(marker[-1][len("HELP-JSON ") :]).items()}
    for script, (code, _) in list(texts.items()):
        if code != 0:  # run it alone, as a user would, before calling it broken
            alone = subprocess.run(
                [sys.executable, script, "--help"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            texts[script] = (alone.returncode, alone.stdout + alone.stderr)
    return texts


def _listed_options(help_text: str) -> set[str]:
    """The option strings of argparse's option lines (``  --name VALUE, --alias VALUE  help``)."""
    options = set()
    for line in help_text.splitlines():
        if line.lstrip().startswith("-"):
            column = re.split(r"\s{2,}", line.strip())[0]
            options.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", column))
    return options


def _unusable_help(script: str, code: int, text: str) -> str | None:
    """None when the help ran; else the reason, or a skip when only detectron2 is missing."""
    if code == 0:
        return None
    if "detectron2" in text and not HAS_DETECTRON2:
        reason = f"{script} --help needs detectron2, which is not installed"
        if os.environ.get(REQUIRE_DETECTRON2_ENV) == "1":
            return reason
        pytest.skip(reason)
    return f"{script} --help exited {code}:\n{text[-2000:]}"


def test_the_pages_hold_commands() -> None:
    """Guards the extraction itself: the pages' main commands are found."""
    found = {" ".join(c.words[:2]) for c in ALL_COMMANDS}
    for expected in ("make demo", "make test", "python tools/train_net.py", "python tools/demo.py"):
        assert expected in found, expected
    assert any(c.words[0] == "torchrun" or "datasets/prepare" in c.words[1] for c in ALL_COMMANDS)
    assert len(CHECKED_SCRIPTS) >= 10


@pytest.mark.parametrize("script", CHECKED_SCRIPTS)
def test_script_options_are_in_its_help(script: str, help_texts) -> None:
    problem = _unusable_help(script, *help_texts[script])
    assert problem is None, problem
    listed = _listed_options(help_texts[script][1])
    wrong = []
    for command, called, arguments in SCRIPT_CALLS:
        if called != script:
            continue
        for word in arguments:
            option = word.split("=", 1)[0]
            if option.startswith("--") and option not in listed:
                wrong.append(f"{command}\n    {option} is not in `{script} --help`")
    assert not wrong, "\n".join(wrong)


def test_scripts_exist() -> None:
    missing = [str(c) for c, script, _ in SCRIPT_CALLS if not (REPO / script).is_file()]
    missing += [str(c) for c in ALL_COMMANDS
                if c.words[0] == "bash" and len(c.words) > 1 and c.words[1].endswith(".sh")
                and not (REPO / c.words[1]).is_file()]  # fmt: skip
    assert not missing, "\n".join(missing)


def test_every_tool_has_an_example_in_the_tools_guide() -> None:
    guide = [c for c in ALL_COMMANDS if c.page == "tools/README.md"]
    called = {_relative(REPO / w) for c in guide for w in c.words if w.startswith("tools/")}
    tools = {_relative(p) for pattern in ("*.py", "*.sh") for p in (REPO / "tools").glob(pattern)}
    assert not tools - called, f"tools/README.md has no example of {sorted(tools - called)}"


def test_make_targets_and_variables_exist() -> None:
    makefile = MAKEFILE.read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    variables = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[?:+]?=", makefile, re.M))
    wrong = []
    for command in (c for c in ALL_COMMANDS if c.words[0] == "make"):
        for word in command.words[1:]:
            if "=" in word and word.split("=", 1)[0] not in variables:
                wrong.append(f"{command}: no variable {word.split('=', 1)[0]} in the Makefile")
            elif "=" not in word and not word.startswith("-") and word not in targets:
                wrong.append(f"{command}: no target {word} in the Makefile")
    for page in PAGES:  # `make X` in the prose too
        for target in re.findall(r"`make ([\w-]+)", page.read_text()):
            if target not in targets:
                wrong.append(f"{_relative(page)}: `make {target}`: no such target")
    assert not wrong, "\n".join(wrong)


def test_requirement_files_exist() -> None:
    wrong = []
    for command in ALL_COMMANDS:
        words = command.words
        for flag, name in zip(words, words[1:]):
            if "pip" in words[:3] and flag == "-r" and not (REPO / name).is_file():
                wrong.append(f"{command}: {name} does not exist")
    assert not wrong, "\n".join(wrong)


def test_config_paths_exist() -> None:
    wrong = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            for path in CONFIG_PATH.findall(line):
                # In a pattern, NN stands for a two-digit number (tableNN_*.yaml).
                pattern = path.replace("NN", "[0-9][0-9]")
                exists = any(REPO.glob(pattern)) if "*" in path else (REPO / path).is_file()
                if not exists and path not in READER_FILES:
                    wrong.append(f"{_relative(page)}:{number}: {path} does not exist")
    for command in ALL_COMMANDS:  # loop-expanded paths
        for word in command.words:
            for path in CONFIG_PATH.findall(word):
                if "*" not in path and path not in READER_FILES and not (REPO / path).is_file():
                    wrong.append(f"{command}: {path} does not exist")
    assert not wrong, "\n".join(sorted(set(wrong)))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    in_code, anchors = False, set(HTML_ANCHOR.findall(text))
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def test_relative_links_reach_a_page_and_heading() -> None:
    wrong = []
    for page in PAGES:
        for target in MARKDOWN_LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                wrong.append(f"{_relative(page)}: link {target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                wrong.append(f"{_relative(page)}: link {target}: no such heading or anchor")
    assert not wrong, "\n".join(wrong)


def test_readme_is_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_detectron2_commit_is_the_makefiles() -> None:
    pinned = re.search(r"^DETECTRON2_COMMIT \?= ([0-9a-f]{40})$", MAKEFILE.read_text(), re.M)[1]
    for page in PAGES:
        for commit in re.findall(r"detectron2\.git@([0-9a-f]+)", page.read_text()):
            assert commit == pinned, f"{_relative(page)} builds detectron2 {commit}, not {pinned}"


def test_custom_config_example_resolves_its_base() -> None:
    """The dataset guide's config, saved where it says, finds its ``_BASE_``."""
    text = (REPO / "datasets" / "README.md").read_text()
    saved_as = re.search(r"Save\s+this\s+as\s+`([^`]+\.yaml)`", text)
    assert saved_as, "datasets/README.md names no file for the custom config"
    base = re.search(r"_BASE_: (\S+)", text[saved_as.end() :])[1]
    assert (REPO / Path(saved_as[1]).parent / base).resolve().is_file(), base


def test_a_help_that_needs_detectron2_skips_or_fails_as_required(monkeypatch) -> None:
    """Without detectron2 such a script is skipped with the reason; CI's second pass fails."""
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "HAS_DETECTRON2", False)
    monkeypatch.delenv(REQUIRE_DETECTRON2_ENV, raising=False)
    missing = "ModuleNotFoundError: No module named 'detectron2'"
    with pytest.raises(pytest.skip.Exception, match="needs detectron2"):
        _unusable_help("tools/train_net.py", 1, missing)
    monkeypatch.setenv(REQUIRE_DETECTRON2_ENV, "1")
    assert "needs detectron2" in _unusable_help("tools/train_net.py", 1, missing)
    assert "exited 2" in _unusable_help("tools/demo.py", 2, "error: unrecognized arguments")
    assert _unusable_help("tools/demo.py", 0, "usage: demo.py") is None


def test_extraction_reads_continuations_loops_and_option_columns() -> None:
    text = (
        "```bash\n"
        "X=1 python tools/a.py --one \\\n  --two=2 KEY value  # --comment\n"
        'for t in p q; do\n  make web WEB_ARGS="--port ${t}"\ndone\n'
        "```\n"
        "```\ntree/\n  python tools/b.py\n```\n"
    )
    words = [c.words for c in _text_commands(text, "page.md")]
    assert words[0] == ("python", "tools/a.py", "--one", "--two=2", "KEY", "value")
    assert ("make", "web", "WEB_ARGS=--port p") in words and (
        "make",
        "web",
        "WEB_ARGS=--port q",
    ) in words
    assert ("python", "tools/b.py") in words and len(words) == 4
    help_text = (
        "options:\n  -h, --help  show\n  --vocabulary-file FILE, --alias FILE\n   text --not\n"
    )
    assert _listed_options(help_text) == {"-h", "--help", "--vocabulary-file", "--alias"}
