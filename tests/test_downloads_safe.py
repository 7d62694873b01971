"""Downloads a visitor opens in a spreadsheet or a JSON parser are safe (issue 30, items 8 and
9): CSV text cells that a spreadsheet would run as a formula are neutralised, and the metrics
JSON holds no Infinity or NaN (null, with a note naming the field)."""
import csv
import io
import json
import math

import pytest

from ui import views


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(start):
    text = views.csv_text([{"token": f"{start}HYPERLINK(\"http://evil\")", "weight": -0.25}])
    row = list(csv.reader(io.StringIO(text)))[1]
    assert row[0].startswith("'" + start), row
    assert row[1] == "-0.25"              # numbers stay numbers


def test_the_metrics_download_is_valid_json_with_a_note():
    data = {"perplexity": math.inf, "metrics": {"entropy": [1.0, math.nan]}, "notices": []}
    raw = views.json_download(data)

    def strict(c):
        raise ValueError(c)
    parsed = json.loads(raw, parse_constant=strict)   # Infinity or NaN would raise
    assert parsed["perplexity"] is None and parsed["metrics"]["entropy"] == [1.0, None]
    assert any("perplexity" in n for n in parsed["notes"])
