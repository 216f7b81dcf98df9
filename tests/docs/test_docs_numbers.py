"""Numbers quoted on several user pages agree: the paper's table (README, MODEL_ZOO, the configs'
comments), ``make demo``'s range and the runs it comes from, the mutation score, the ablation
means."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from docs_pages import PAGES, REPO
from docs_pages import relative_path as _relative

TRIPLE = r"(\d+\.\d) / (\d+\.\d) / (\d+\.\d)"
PAPER_CELL = re.compile(TRIPLE + r" \(\[config\]\(([^)]+)\), \[zoo\]\(MODEL_ZOO\.md#([\w-]+)\)\)")
CONFIG_PAPER_COMMENT = re.compile(r"Paper Table [IV]+: sIoU (\S+) / uIoU (\S+) / hIoU (\S+)\.")
DEMO_RANGE = re.compile(r"(\d+\.\d)–(\d+\.\d) / (\d+\.\d)–(\d+\.\d) / (\d+\.\d)–(\d+\.\d)")
DEMO_RUN_ROW = re.compile(r"^\| [^|]+ \| (\d+\.\d\d) \| (\d+\.\d\d) \| (\d+\.\d\d) \|$", re.M)
MUTATION_SCORE = re.compile(r"(\d+\.\d)%\**\s+\((\d+) of (\d+)\)")
MUTATION_PAGE = REPO / "docs" / "MUTATION.md"


def _zoo_row(anchor: str) -> str:
    rows = [x for x in (REPO / "MODEL_ZOO.md").read_text().splitlines() if f'id="{anchor}"' in x]
    assert len(rows) == 1, f"MODEL_ZOO.md: {len(rows)} rows with the anchor {anchor}"
    return rows[0]


def test_paper_table_agrees_with_the_model_zoo_and_the_configs() -> None:
    cells = PAPER_CELL.findall((REPO / "README.md").read_text())
    assert len(cells) == 8, "README's results table: 4 rows x 2 datasets"
    for s, u, h, config, anchor in cells:
        row = _zoo_row(anchor)
        assert f"({config})" in row, f"README links {config} to MODEL_ZOO.md#{anchor}: {row}"
        assert f"{s} / {u} / {h}" in row, f"{config}: README {s} / {u} / {h}, zoo: {row}"
        comment = CONFIG_PAPER_COMMENT.search((REPO / config).read_text())
        if comment:
            assert comment.groups() == (s, u, h), f"{config}'s comment says {comment.groups()}"


def test_make_demo_range_is_the_span_of_its_runs() -> None:
    world = (REPO / "docs" / "SYNTHETIC_WORLD.md").read_text()
    runs = [tuple(Decimal(x) for x in row) for row in DEMO_RUN_ROW.findall(world)]
    assert len(runs) >= 2, "docs/SYNTHETIC_WORLD.md: the table of make demo's runs"
    span = tuple(  # (s_min, s_max, u_min, u_max, h_min, h_max), rounded as people round
        str(Decimal(f(r[i] for r in runs)).quantize(Decimal("0.1"), ROUND_HALF_UP))
        for i in range(3)
        for f in (min, max)
    )
    quoted = {
        _relative(page): set(DEMO_RANGE.findall(page.read_text()))
        for page in PAGES
        if DEMO_RANGE.search(page.read_text())
    }
    for page in ("README.md", "MODEL_ZOO.md", "docs/SYNTHETIC_WORLD.md"):
        assert page in quoted, f"{page} does not quote make demo's range"
    for page, ranges in quoted.items():
        assert ranges == {span}, f"{page} quotes {ranges}; the runs span {span}"


def test_mutation_score_is_quoted_as_measured() -> None:
    # The full run's line: "- score **96.3%** (2921 of 3033)".
    measured = re.search(r"^- score \*\*" + MUTATION_SCORE.pattern, MUTATION_PAGE.read_text(), re.M)
    assert measured, "docs/MUTATION.md: no '- score **N%** (k of n)' line"
    percent, killed, total = measured.groups()
    assert f"{100 * int(killed) / int(total):.1f}" == percent
    for page in PAGES:
        if page.name in {"MUTATION.md", "HISTORY.md"}:
            continue  # the measurement itself, and dated earlier runs
        for quote in MUTATION_SCORE.findall(page.read_text()):
            assert quote == (percent, killed, total), f"{_relative(page)} quotes {quote}"


def test_synthetic_targets_quote_the_ablation_means() -> None:
    ablations = (REPO / "docs" / "ABLATIONS.md").read_text()
    world = (REPO / "docs" / "SYNTHETIC_WORLD.md").read_text()
    quoted = re.findall(r"^\| `(\w+)`, 3 seeds: uIoU [^|]+\| ([\d.]+) \|", world, re.M)
    assert len(quoted) == 3
    for variant, value in quoted:
        row = next(x for x in ablations.splitlines() if x.startswith(f"| `{variant}` |"))
        assert f"| {value} ± " in row, f"{variant}: SYNTHETIC_WORLD.md {value}, ABLATIONS.md {row}"
