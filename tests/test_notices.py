"""``ui.notices.shown``, the one function that hides the server's folders from visitors: every
page shows a folder the same way, and no absolute server path survives it."""
import random
import tempfile

import pytest

from localist_core.paths import REPO
from ui import launch_root
from ui.notices import plain, shown


@pytest.fixture()
def outside_root(monkeypatch, tmp_path):
    """The app-sweeps root outside the repository, under a name with a space in it."""
    root = (tmp_path / "app sweeps").resolve()
    monkeypatch.setenv(launch_root.ROOT_VAR, str(root))
    return root


def test_an_app_sweep_cache_reads_the_same_wherever_it_is_named(outside_root):
    cache = outside_root / "my-sweep" / "cache"
    want = "$LOCALIST_APP_SWEEPS/my-sweep/cache"
    assert shown(cache) == shown(str(cache)) == want          # a folder label (Sweeps, Tradeoff)
    assert shown(f"There is no sweep cache at {cache} yet.") == \
        f"There is no sweep cache at {want} yet."             # inside a message
    assert shown(f"Refused cache file: {cache}/r1.json: corrupt JSON") == \
        f"Refused cache file: {want}/r1.json: corrupt JSON"
    assert shown(outside_root) == "$LOCALIST_APP_SWEEPS"
    assert shown(f"{outside_root}/") == "$LOCALIST_APP_SWEEPS/"
    assert "app sweeps" not in plain(f"({cache})") and str(outside_root) not in plain(cache)


def test_a_root_inside_the_repository_reads_relative_to_it(monkeypatch):
    monkeypatch.delenv(launch_root.ROOT_VAR, raising=False)
    assert shown(REPO / "runs" / "app-sweeps" / "a" / "cache") == "runs/app-sweeps/a/cache"
    assert shown(REPO) == "." and shown(f"{REPO}/assets/sweep: bad") == "assets/sweep: bad"


def test_a_root_passed_in_is_used_over_the_environment(outside_root, tmp_path):
    other = tmp_path / "elsewhere"
    assert shown(other / "a", root=other) == "$LOCALIST_APP_SWEEPS/a"
    assert shown(other / "a") == "…/elsewhere/a"              # not the root: its last two parts


def test_a_folder_that_only_starts_like_a_known_one_is_not_inside_it(tmp_path):
    root = tmp_path / "root"
    assert shown(f"{REPO}2/x/y", root) == "…/x/y"
    assert shown(f"{root}-old/x/y", root) == "…/x/y"


@pytest.mark.parametrize("seed", range(3))
def test_no_absolute_server_path_survives(outside_root, seed):
    """A known folder (the repository, the app-sweeps root) is cut off whole, even where a name
    after it holds a space; any other path under a real top-level folder keeps its last two
    parts."""
    rng = random.Random(seed)
    plain_parts = ["ckpt-1", "config.json", "x.y", "räume", "~u", "a=b", "runs"]
    known, other = [str(REPO), str(outside_root)], [tempfile.gettempdir(), "/usr"]
    for _ in range(200):
        root = rng.choice(known + other)
        parts = plain_parts + (["with space"] if root in known else [])
        names = [rng.choice(parts) for _ in range(rng.randint(1 if root in known else 2, 4))]
        path = root + "/" + "/".join(names)
        lead, tail = rng.choice(["", "error: ", "(", "'"]), rng.choice(["", ": bad", ")", "'"])
        out = shown(lead + path + tail)
        assert not any(secret in out for secret in known + other), (path, out)
        assert out.startswith(lead) and out.endswith(tail)
        kept = names if root in known else names[-2:]
        assert out.endswith("/".join(kept) + tail), (path, out)


def test_a_visitors_own_slashes_are_left_alone(outside_root):
    for text in ("λ/τ and 1/2", "regex /a{9}/ is too large", "/nosuchdir/a/b", "no path"):
        assert shown(text) == text
