"""Re-print REPRODUCTION.md's marked report tables from the report, after new results land.

    python scripts/reprint_tables.py [--doc REPRODUCTION.md]

Each table after a ``<!-- report: CACHE -->`` marker is a selection of rows of
``python -m localist_core report --cache CACHE``. A table whose rows are all still printed is
left alone; otherwise it is matched to the report's table with the same first two header cells
that holds most of its rows, and each row is replaced by that table's row with the same leading
cells (the cells before the ``n`` or ``seeds`` column, else the first two). A row the report no
longer prints is dropped and named on stderr. The prose around the tables is not touched: the
figures it quotes still need reading by a person (tests/test_reproduction.py checks the tables
only).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's localist_core

from localist_core.experiments.report import full_report  # noqa: E402

MARKER = re.compile(r"<!-- report: (\S+) -->")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text: str) -> list[list[str]]:
    """Every Markdown table of ``text``, as its lines."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                out.append(current)
            current.append(line)
        else:
            current = None
    return out


def key_width(header: list[str]) -> int:
    for name in ("n", "seeds"):
        if name in header:
            return header.index(name)
    return 2


def reprint(old: list[str], printed: list[list[str]]) -> tuple[list[str], list[str]]:
    """(the table re-printed, the rows dropped) for one marked table ``old``."""
    everything = {line for t in printed for line in t}
    if all(row in everything for row in old):
        return old, []
    best = None
    for t in (t for t in printed if cells(t[0])[:2] == cells(old[0])[:2]):
        k = key_width(cells(t[0]))
        rows = {tuple(cells(r)[:k]): r for r in t[2:]}
        hits = sum(tuple(cells(r)[:k]) in rows for r in old[2:])
        if best is None or hits > best[0]:
            best = (hits, t, k, rows)
    if best is None:
        return old, old[2:]
    _, t, k, rows = best
    new, dropped = [t[0], t[1]], []
    for r in old[2:]:
        key = tuple(cells(r)[:k])
        if key in rows:
            new.append(rows[key])
        else:
            dropped.append(r)
    return new, dropped


def reprint_document(text: str, report_for) -> tuple[str, list[str]]:
    """``text`` with every marked table re-printed from ``report_for(cache)``'s text."""
    lines, dropped, printed = text.splitlines(), [], {}
    i = 0
    while i < len(lines):
        m = MARKER.search(lines[i])
        if not m:
            i += 1
            continue
        cache = m.group(1)
        if cache not in printed:
            printed[cache] = tables(report_for(cache))
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        start = j
        while j < len(lines) and lines[j].startswith("|"):
            j += 1
        new, gone = reprint(lines[start:j], printed[cache])
        dropped += gone
        lines[start:j] = new
        i = start + len(new)
    return "\n".join(lines) + "\n", dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "REPRODUCTION.md"))
    args = ap.parse_args()
    doc = Path(args.doc)
    root = doc.resolve().parent
    text, dropped = reprint_document(doc.read_text(encoding="utf-8"),
                                     lambda cache: full_report(root / cache))
    doc.write_text(text, encoding="utf-8")
    for row in dropped:
        print(f"dropped (no longer printed): {row[:100]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
