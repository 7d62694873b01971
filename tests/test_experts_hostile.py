"""Experts results files an operator put in place cannot reach visitors (issue 30, item 8):
their strings render as plain text (a Markdown link or image in a title or base name is shown
literally, never followed or fetched), and every nested field the page reads is type-checked,
so a wrongly typed one is a notice naming the file, never a crash of the page for everyone."""
import json
import shutil

import pytest

from localist_core.experiments.expert_files import ExpertsError, load_runs, read_summary
from tests import test_app_experts

results = test_app_experts.results       # the CLI's results on a tiny checkpoint (fixture)
LINK = "[win a prize](https://evil.example/phish)"
IMAGE = "![x](https://evil.example/pixel.png)"
HTML = '<a href="https://evil.example/phish">click</a>'


def _copy(out, tmp_path, edit_run=None, edit_summary=None):
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for path in sorted(copy.glob("run-*.json")):
        data = json.loads(path.read_text())
        if edit_run:
            edit_run(data)
        path.write_text(json.dumps(data))
    if edit_summary:
        data = json.loads((copy / "summary.json").read_text())
        edit_summary(data)
        (copy / "summary.json").write_text(json.dumps(data))
    return copy


def _set(path: str, value):
    """An edit that sets the field at dotted ``path`` (numbers index lists)."""
    def edit(data):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in parents:
            data = data[k]
        data[last] = value
    return edit


RUN_FIELDS = [("stream.tokens", "many"), ("stream.docs", [1]), ("stream", "x"),
              ("settings.base.name", {"a": 1}), ("settings.stream", 5),
              ("settings.base.sha256", 7)]
SUMMARY_FIELDS = [("by_bits_per_param.0.recruited.mean", "x"),
                  ("by_bits_per_param.0.single_bits_per_token.sd", [1]),
                  ("by_bits_per_param.0.pool_minus_single.lo", "low"),
                  ("by_bits_per_param.0.pool_minus_single.hi", None),
                  ("by_bits_per_param.0.seeds", 3),
                  ("by_bits_per_param.0.base_bits_per_token", "x")]


@pytest.mark.parametrize("path,value", RUN_FIELDS)
def test_a_wrongly_typed_run_field_refuses_that_file(results, tmp_path, path, value):
    copy = _copy(results[1], tmp_path, edit_run=_set(path, value))
    runs, problems = load_runs(copy)
    assert not runs and problems and path.split(".")[-1] in problems[0]


@pytest.mark.parametrize("path,value", SUMMARY_FIELDS)
def test_a_wrongly_typed_summary_field_refuses_the_summary(results, tmp_path, path, value):
    copy = _copy(results[1], tmp_path, edit_summary=_set(path, value))
    with pytest.raises(ExpertsError, match="summary.json"):
        read_summary(copy)


def test_wrongly_typed_fields_are_notices_on_the_page(results, monkeypatch, tmp_path):
    def run(data):
        if data["seed"] == 1:
            data["stream"]["tokens"] = "many"
    copy = _copy(results[1], tmp_path, edit_run=run,
                 edit_summary=_set("by_bits_per_param.0.pool_minus_single.lo", "low"))
    at = test_app_experts._page(monkeypatch, results[0], copy)   # asserts no exception
    warned = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "summary.json" in warned and "stream.tokens" in warned


def test_strings_from_the_files_render_as_plain_text(results, monkeypatch, tmp_path):
    def run(data):
        data["settings"]["base"]["name"] = f"{LINK} {IMAGE}"
        data["settings"]["stream"] = IMAGE
        for a in data["attempts"]:
            a["seed_title"] = f"{HTML} {LINK}"
        for e in data["experts"]:
            e["titles"] = [LINK] * len(e["titles"])
    copy = _copy(results[1], tmp_path, edit_run=run)
    at = test_app_experts._page(monkeypatch, results[0], copy, ckpt="tiny-b")
    shown = [el.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for el in at.get(kind)]
    assert any("evil" in v for v in shown)        # the names are shown …
    for v in shown:                               # … as text: no Markdown link or image
        assert "](https://evil" not in v and "![" not in v, v
    for chart in at.get("plotly_chart"):
        assert "<a href" not in chart.proto.spec
