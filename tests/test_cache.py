"""The sweep result cache as a reader sees it: every file checked before it is trusted, a bad file
named with its problem, a folder read up to its limits (the unsafe files themselves are in
tests/test_unsafe_files.py)."""
import json
from pathlib import Path

import pytest

from localist_core.experiments import cache
from localist_core.experiments.cache import (
    SweepCacheError,
    load_cache,
    read_result,
    run_id_problem,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_result_passes_the_checks():
    runs, problems = load_cache(ROOT / "assets/sweep")
    assert len(runs) == len([p for p in (ROOT / "assets/sweep").glob("*.json")
                             if p.name != "baselines.json"]) and not problems


def test_bad_cache_files_are_reported_by_name(tmp_path):
    (tmp_path / "corrupt.json").write_text("{not json")
    (tmp_path / "future.json").write_text(json.dumps({"schema_version": 99, "run_id": "x",
                                                      "config": {}, "metrics": {}}))
    runs, problems = load_cache(tmp_path)
    assert runs == [] and len(problems) == 2
    assert any("corrupt.json: corrupt JSON" in p for p in problems)
    assert any("future.json: schema_version 99" in p for p in problems)
    with pytest.raises(SweepCacheError, match="missing"):
        read_result(tmp_path / "absent.json")
    assert load_cache(tmp_path / "nowhere")[1]


def test_a_run_id_that_is_not_a_plain_name_is_refused():
    for bad in ("", ".hidden", "a/b", "..", "a\\b", "x" * 201, 7, None, "a b"):
        assert run_id_problem(bad), bad


def test_a_cache_is_read_up_to_its_limits_and_the_rest_named(tmp_path, monkeypatch):
    run = {"schema_version": 1, "config": {}, "metrics": {"valid": []}}
    for i in range(6):
        (tmp_path / f"r{i}.json").write_text(json.dumps({**run, "run_id": f"r{i}"}))
    monkeypatch.setattr(cache, "MAX_CACHE_RUNS", 4)
    runs, problems = load_cache(tmp_path)
    assert [r["run_id"] for r in runs] == ["r0", "r1", "r2", "r3"]
    assert len(problems) == 1 and "2 result file(s) not read" in problems[0]
    monkeypatch.setattr(cache, "MAX_CACHE_BYTES", 3 * len(json.dumps({**run, "run_id": "r0"})))
    assert len(load_cache(tmp_path)[0]) == 3
