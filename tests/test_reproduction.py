"""REPRODUCTION.md's tables are the report's, not copies typed by hand: every table row that
follows a ``<!-- report: CACHE -->`` marker must be a line of
``python -m localist_core report --cache CACHE``, character for character."""
import re
from functools import cache
from pathlib import Path

from localist_core.experiments.report import full_report

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "REPRODUCTION.md"
MARKER = re.compile(r"<!-- report: (\S+) -->")


def marked_tables(text: str) -> list[tuple[str, list[str]]]:
    """(cache, the table's rows) for every marked table: the marker, then the table on the
    following lines (blank lines between are allowed), its header and separator included."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        m = MARKER.search(line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        rows = []
        while j < len(lines) and lines[j].startswith("|"):
            rows.append(lines[j])
            j += 1
        out.append((m.group(1), rows))
    return out


@cache
def report_lines(cache_dir: str) -> frozenset[str]:
    return frozenset(full_report(REPO / cache_dir).splitlines())


def test_marked_tables_are_found_with_their_rows():
    text = "a\n<!-- report: assets/study -->\n\n| h |\n| --- |\n| 1 |\nafter\n| not |\n"
    assert marked_tables(text) == [("assets/study", ["| h |", "| --- |", "| 1 |"])]


def test_every_marked_row_of_reproduction_md_is_a_line_of_the_report():
    tables = marked_tables(DOC.read_text(encoding="utf-8"))
    assert tables, "REPRODUCTION.md has no table marked <!-- report: CACHE -->"
    for cache_dir, rows in tables:
        assert (REPO / cache_dir).is_dir(), f"the marker names {cache_dir}, which is not here"
        assert len(rows) >= 3, f"a marked table from {cache_dir} has no rows"
        missing = [r for r in rows if r not in report_lines(cache_dir)]
        assert not missing, (f"rows of REPRODUCTION.md not printed by `python -m localist_core "
                             f"report --cache {cache_dir}`:\n" + "\n".join(missing))
