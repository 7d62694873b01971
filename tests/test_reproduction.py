"""REPRODUCTION.md's tables are printed by the project, not copies typed by hand: every table
row that follows a ``<!-- report: CACHE -->`` marker must be a line of
``python -m localist_core report --cache CACHE``, and every row after a
``<!-- beta: FILE -->`` marker a line of the tables ``scripts/calibrate_beta.py`` prints from
the raw figures it kept in FILE (``--json``), character for character."""
import importlib.util
import json
import re
from functools import cache
from pathlib import Path

from localist_core.experiments.report import full_report

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "REPRODUCTION.md"
MARKER = re.compile(r"<!-- (report|beta): (\S+) -->")


def marked_tables(text: str) -> list[tuple[str, str, list[str]]]:
    """(kind, path, the table's rows) for every marked table: the marker, then the table on the
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
        out.append((m.group(1), m.group(2), rows))
    return out


@cache
def report_lines(cache_dir: str) -> frozenset[str]:
    return frozenset(full_report(REPO / cache_dir).splitlines())


@cache
def beta_lines(path: str) -> frozenset[str]:
    """The lines calibrate_beta.py prints for the raw figures it wrote to ``path``."""
    spec = importlib.util.spec_from_file_location("calibrate_beta",
                                                  REPO / "scripts" / "calibrate_beta.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    figures = json.loads((REPO / path).read_text(encoding="utf-8"))["figures"]
    bases = dict.fromkeys(f["base"] for f in figures)
    return frozenset("\n\n".join(script.table(b, figures) for b in bases).splitlines())


PRINTED_BY = {"report": (report_lines, "`python -m localist_core report --cache {}`"),
              "beta": (beta_lines, "scripts/calibrate_beta.py from {}")}


def test_marked_tables_are_found_with_their_rows():
    text = ("a\n<!-- report: assets/study -->\n\n| h |\n| --- |\n| 1 |\nafter\n| not |\n"
            "<!-- beta: assets/b.json -->\n| b |\n")
    assert marked_tables(text) == [("report", "assets/study", ["| h |", "| --- |", "| 1 |"]),
                                   ("beta", "assets/b.json", ["| b |"])]


def test_every_marked_row_of_reproduction_md_is_printed_by_the_project():
    tables = marked_tables(DOC.read_text(encoding="utf-8"))
    assert {kind for kind, _, _ in tables} == set(PRINTED_BY), \
        "REPRODUCTION.md should mark report tables and the β calibration's tables"
    for kind, path, rows in tables:
        lines, source = PRINTED_BY[kind]
        assert (REPO / path).exists(), f"the marker names {path}, which is not here"
        assert len(rows) >= 3, f"a marked table from {path} has no rows"
        missing = [r for r in rows if r not in lines(path)]
        assert not missing, (f"rows of REPRODUCTION.md not printed by {source.format(path)}:\n"
                             + "\n".join(missing))


def test_every_causal_model_behind_the_reported_figures_passed_the_leak_test():
    """The study and the shipped cache hold one result per trained model: each passed the leak
    test it ran after training, except the non-causal diagnostic, which must fail it."""
    from localist_core.experiments.cache import load_cache
    from localist_core.paths import SHIPPED_SWEEP, STUDY_SWEEP
    for folder in (STUDY_SWEEP, SHIPPED_SWEEP):
        runs, problems = load_cache(folder)
        assert runs and not problems, folder
        assert any(r["config"]["model"].get("noncausal_diagnostic") for r in runs), folder
        for run in runs:
            diagnostic = run["config"]["model"].get("noncausal_diagnostic", False)
            leak = run.get("leak_test")
            assert isinstance(leak, dict) and leak["checked"] > 0, run["run_id"]
            assert leak["passed"] is not diagnostic, run["run_id"]
