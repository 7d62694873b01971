"""The smaller visitor-facing cases of issue 30 (item 9): invisible characters removed, an
over-long link noticed, a huge seed refused clearly, a stale widget id and a forged NaN (the
block-size box) harmless."""
import math

import pytest
from streamlit.testing.v1 import AppTest

from localist_core.model.config import ConfigError, TrainConfig
from localist_core.model.tokenizer import dropped_characters, normalize_text
from tests import test_hostile as hostile
from ui import links, server_guard

app_env, model = hostile.app_env, hostile.model   # a tiny checkpoint the app lists (fixtures)


@pytest.mark.parametrize("ch", ["\u3164", "\u2800", "\u115f", "\u034f", "\u1160", "\uffa0"])
def test_invisible_letters_and_marks_are_removed(ch):
    assert normalize_text(f"a{ch}b") == "ab" and dropped_characters(f"a{ch}b") == 1


def test_a_20_digit_seed_is_a_clear_error():
    with pytest.raises(ConfigError, match="seed must be a whole number in 0..4,294,967,295"):
        TrainConfig(seed=99999999999999999999)
    TrainConfig(seed=2**32 - 1)


def test_an_over_long_link_is_cut_with_a_marker():
    from streamlit.proto.BackMsg_pb2 import BackMsg
    back = BackMsg()
    back.rerun_script.query_string = "ckpt=x&text=" + "a" * (512 * 1024 + 1)
    server_guard.bound_backmsg(back)
    qs = back.rerun_script.query_string
    assert len(qs) <= server_guard.QUERY_MAX_BYTES
    assert qs == f"ckpt=x&{server_guard.LINK_CUT}={512 * 1024 + 13}"


def test_an_over_long_link_gives_a_notice(app_env):
    at = AppTest.from_file(hostile.APP, default_timeout=120)
    at.query_params["ckpt"] = hostile.CKPT
    at.query_params[server_guard.LINK_CUT] = str(512 * 1024 + 13)   # as the guard leaves it
    at.run()
    assert not at.exception
    assert any("The link was 524301 characters long" in w.value.replace("\\", "")
               for w in at.warning)


def test_a_stale_widget_id_is_ignored():
    def script():
        from ui.links import _save
        _save("a_widget_no_page_drew")
    at = AppTest.from_function(script)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert links.PERSIST + "a_widget_no_page_drew" not in at.session_state


def test_a_forged_non_finite_widget_value_is_dropped_before_streamlit_holds_it():
    """A NaN sent for the block-size box made Streamlit's int deserializer raise on every later
    rerun of that session, before the page ran; the guard drops it (the box keeps its value)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    back = BackMsg()
    widgets = back.rerun_script.widget_states.widgets
    for wid, value in (("nan", math.nan), ("inf", -math.inf), ("ok", 8.0)):
        w = widgets.add()
        w.id, w.double_value = wid, value
    slider = widgets.add()
    slider.id = "slider"
    slider.double_array_value.data.extend([0.5, math.inf])
    server_guard.bound_backmsg(back)
    assert [w.id for w in widgets] == ["ok"] and widgets[0].double_value == 8.0
