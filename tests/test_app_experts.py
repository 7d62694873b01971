"""AppTest: the Experts page reads a results folder the CLI wrote on a tiny checkpoint, shows its
tables and routes the sidebar's text; without results it says how to make them; another base or
a tampered adapters file gives a notice, never an exception."""
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from localist_core import save_checkpoint
from localist_core.cli import main
from localist_core.experiments.train import make_model
from localist_core.model.config import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "app_pages/experts.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model_cfg, tiny_corpus, tiny_data_dir):
    """Two untrained tiny checkpoints, and the results of `experts` grown on the first."""
    root = tmp_path_factory.mktemp("experts-ckpts")
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        save_checkpoint(root / name, make_model(tiny_model_cfg, tiny_corpus, seed=seed),
                        tiny_corpus.tokenizer, TrainConfig(protocol="dial", penalty_form="none"))
    out = tmp_path_factory.mktemp("experts") / "experts"
    assert main(["experts", "--checkpoint", str(root / "tiny-a"), "--out", str(out),
                 "--data-dir", str(tiny_data_dir), "--seeds", "1,2", "--bits-per-param",
                 "0.05,64", "--rank", "2", "--steps", "4", "--max-docs", "12",
                 "--check-every", "4", "--max-heldout", "6", "--max-doc-tokens", "96",
                 "--lr", "0.05"]) == 0
    return root, out


def _page(monkeypatch, root, folder, ckpt="tiny-a") -> AppTest:
    monkeypatch.setenv("LOCALIST_CHECKPOINT_DIRS", str(root))
    monkeypatch.setenv("LOCALIST_EXPERTS_DIR", str(folder))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["ckpt"] = ckpt
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_page_shows_the_runs_and_routes_the_text(results, monkeypatch):
    at = _page(monkeypatch, *results)
    assert at.header[0].value == "Experts"
    assert [s.value for s in at.subheader][:2] == ["How many experts each cost recruits",
                                                   "The experts as they were recruited"]
    assert at.selectbox(key="ex_bpp").options == ["0.05", "64"]
    assert len(at.dataframe) == 5                     # costs, attempts, experts, held-out, route
    assert len(at.get("plotly_chart")) == 1           # the timeline
    routed = next(m for m in at.metric if m.label == "Routed to")
    assert routed.value.startswith("expert ")
    at.selectbox(key="ex_bpp").set_value(64.0).run()
    assert not at.exception
    assert at.selectbox(key="ex_seed").options == ["1", "2"]


def test_without_results_the_page_says_how_to_make_them(results, monkeypatch, tmp_path):
    at = _page(monkeypatch, results[0], tmp_path / "none")
    assert any("python -m localist_core experts" in i.value for i in at.info)
    assert len(at.dataframe) == 0


def test_another_base_or_a_tampered_adapters_file_is_a_notice(results, monkeypatch, tmp_path):
    root, out = results
    at = _page(monkeypatch, root, out, ckpt="tiny-b")
    assert any("grown on tiny-a" in i.value.replace("\\", "") for i in at.info)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for st in copy.glob("*.safetensors"):
        st.write_bytes(st.read_bytes()[:-4])
    at = _page(monkeypatch, root, copy)
    assert any("Refused adapters file" in w.value.replace("\\", "") for w in at.warning)
    assert not any(m.label == "Routed to" for m in at.metric)
