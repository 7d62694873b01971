"""End-to-end: the dashboard in headless Chromium. Moving the λ slider redraws the attention
heatmap and updates the deep link, the sidebar's settings stay as they were when the app's menu
switches pages, and a link to a page, opened first on a freshly started server, shows the app's
own navigation. Every page opens from its link with a dial setting (a screenshot of each),
the Theory page shows its formulas as mathematics, and the Tradeoff picker adds a series.
Screenshots and the server logs go to test-artifacts/."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import torch

import ui
from localist_core import save_checkpoint
from localist_core.model.config import TrainConfig, preset
from ui.catalogue import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium dials out, and the closed network refuses it.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SERVER_WAIT_S = 120      # the server answers in seconds; the model loads on the first page view
HEATMAP_WAIT_MS = 120_000
REDRAW_WAIT_MS = 60_000
LAM_STEP, LAM_PRESSES = 0.05, 4

try:
    from playwright.sync_api import sync_playwright
except ImportError:      # CI installs it from requirements.txt
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not importable "
                       "(pip install -r requirements.txt)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Debian chromium at {CHROMIUM} "
                       "(apt-get install -y chromium)"),
]

# The heatmap's identity: its z values (plotly may ship them base64-encoded) and its title.
HEATMAP_STATE = """() => {
    const gd = document.querySelector('.st-key-heatmap:not([data-stale=true]) .js-plotly-plot');
    if (!gd || !gd.data || !gd.data.length || gd.data[0].z === undefined) return null;
    const t = gd.layout && gd.layout.title;
    return {z: JSON.stringify(gd.data[0].z), title: String((t && t.text) || t || '')};
}"""
REDRAWN = """([z, lam]) => { const s = (%s)();
    return s && s.z !== z && s.title.includes('λ=' + lam + ' '); }""" % HEATMAP_STATE
LAM_IN_URL = "lam => new URLSearchParams(location.search).get('lam') === lam"
# Idle: no script running, and no stale element left from the previous run (during a rerun
# Streamlit shows the new heatmap beside the faded old one until the run ends). Settled: idle on
# the Explorer, with its one heatmap.
IDLE = """() => !document.querySelector('[data-testid=stStatusWidget]')
    && !document.querySelector('[data-stale=true]')"""
SETTLED = IDLE + "\n    && document.querySelectorAll('.st-key-heatmap').length === 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_checkpoint_root(request, tmp_path: Path) -> Path:
    """A folder holding one briefly trained tiny dial checkpoint (used when none is shipped)."""
    corpus = request.getfixturevalue("tiny_corpus")
    model_cfg = request.getfixturevalue("tiny_model_cfg")
    from localist_core.experiments.train import train

    cfg = TrainConfig(**{**preset("tiny").train, "protocol": "dial", "penalty_form": "none",
                         "max_steps": 20, "threads": 1})
    threads = torch.get_num_threads()
    try:
        model = train(model_cfg, cfg, corpus, progress=False, eval_tokens=2048).model.eval()
    finally:
        torch.set_num_threads(threads)
    root = tmp_path / "checkpoints"
    save_checkpoint(root / "tiny-dial", model, corpus.tokenizer, cfg)
    return root


def _server_env(request, tmp_path: Path) -> dict:
    """The environment of a test server: the checkpoints the app finds by default
    (assets/checkpoints, plus any folders already in $LOCALIST_CHECKPOINT_DIRS); only without a
    usable one, a tiny one trained here."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    if not [c for c in list_checkpoints() if c.problem is None]:
        env["LOCALIST_CHECKPOINT_DIRS"] = str(_tiny_checkpoint_root(request, tmp_path))
    return env


@contextlib.contextmanager
def _streamlit_server(env: dict, log_name: str):
    """A freshly started Streamlit server for app.py on a free port: yields its base URL once
    it answers, and stops it when the block ends. Its log goes to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    log_path = ARTIFACTS / log_name
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_WAIT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no health answer within {SERVER_WAIT_S} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    """A Streamlit server shared by this file's tests (each opens its own browser session);
    yields its base URL and stops it after."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    with _streamlit_server(_server_env(request, tmp_path), "e2e-streamlit.log") as url:
        yield url


def _lam_in_url(url: str) -> str | None:
    return parse_qs(urlparse(url).query).get("lam", [None])[0]


@contextlib.contextmanager
def _browser_page(messages: list[str], console: bool = False, size=(1400, 1400)):
    """A page in Debian's chromium that records page errors (and console lines) in
    ``messages``; the browser closes when the block ends."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": size[0], "height": size[1]})
            if console:
                page.on("console", lambda m: messages.append(f"console.{m.type}: {m.text}"))
            page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            yield page
        finally:
            browser.close()


def test_lambda_slider_redraws_heatmap_and_deep_link(server):
    messages: list[str] = []
    with _browser_page(messages, console=True) as page:
        t0 = time.monotonic()
        page.goto(server + "/", wait_until="domcontentloaded")
        page.wait_for_function(HEATMAP_STATE, timeout=HEATMAP_WAIT_MS)
        print(f"\nheatmap drawn {time.monotonic() - t0:.1f} s after opening the page")
        page.wait_for_function(SETTLED, timeout=HEATMAP_WAIT_MS)
        before = page.evaluate(HEATMAP_STATE)
        heatmap = page.locator(".st-key-heatmap")
        page.screenshot(path=ARTIFACTS / "e2e-before.png", full_page=True)
        png_before = heatmap.screenshot(path=ARTIFACTS / "e2e-heatmap-before.png")

        # Streamlit's slider is a visually hidden <input type=range> (role slider).
        slider = page.locator("[data-testid=stSidebar]").get_by_role(
            "slider", name="λ — locality")
        start = float(slider.input_value())
        slider.focus()
        t1 = time.monotonic()
        # One step at a time, each awaited: a key pressed while a rerun is under way can be
        # lost (the rerun sends the slider its previous value back).
        for i in range(1, LAM_PRESSES + 1):
            want = f"{min(1.0, round(start + LAM_STEP * i, 2)):g}"
            page.keyboard.press("ArrowRight")
            page.wait_for_function(LAM_IN_URL, arg=want, timeout=REDRAW_WAIT_MS)
            page.wait_for_function(SETTLED, timeout=REDRAW_WAIT_MS)
        assert float(slider.input_value()) == pytest.approx(float(want))
        page.wait_for_function(REDRAWN, arg=[before["z"], want], timeout=REDRAW_WAIT_MS)
        print(f"heatmap redrawn at λ={want} {time.monotonic() - t1:.1f} s after the first key")
        after, url = page.evaluate(HEATMAP_STATE), page.url
        page.screenshot(path=ARTIFACTS / "e2e-after.png", full_page=True)
        png_after = heatmap.screenshot(path=ARTIFACTS / "e2e-heatmap-after.png")
        (ARTIFACTS / "e2e-browser-console.log").write_text("\n".join(messages) + "\n",
                                                          encoding="utf-8")

    assert after["z"] != before["z"]
    assert f"λ={want} " in after["title"] and f"λ={want} " not in before["title"]
    assert hashlib.sha256(png_after).digest() != hashlib.sha256(png_before).digest()
    assert _lam_in_url(url) == want, url
    errors = [m for m in messages if m.startswith("pageerror")]
    assert not errors, errors
    print(url)
    print("artefacts:", ", ".join(sorted(p.name for p in ARTIFACTS.glob("e2e-*"))))


def _sidebar_state(page) -> dict:
    """The sidebar as the visitor sees it: λ and τ, the text radio and the sample's name."""
    bar = page.locator("[data-testid=stSidebar]")
    return {"lam": float(bar.get_by_role("slider", name="λ — locality").input_value()),
            "tau": float(bar.get_by_role("slider", name="τ — temperature").input_value()),
            "sample text": bar.get_by_role("radio", name="Sample text").is_checked(),
            "sample": bar.get_by_role("combobox", name="Sample").input_value()}


TITLE = "title => [...document.querySelectorAll('h2')].some(h => h.innerText.trim() === title)"


def test_the_sidebar_keeps_its_settings_across_pages(server):
    """λ moved on the Explorer, τ and a sample text from a link: the app's own menu leads to
    Compare and Rules & blocks, and each shows the same λ, τ and text in its sidebar."""
    messages: list[str] = []
    with _browser_page(messages) as page:
        page.goto(server + "/?lam=0.3&tau=0.5&prompt=storm", wait_until="domcontentloaded")
        page.wait_for_function(HEATMAP_STATE, timeout=HEATMAP_WAIT_MS)
        page.wait_for_function(SETTLED, timeout=HEATMAP_WAIT_MS)
        slider = page.locator("[data-testid=stSidebar]").get_by_role(
            "slider", name="λ — locality")
        slider.focus()
        page.keyboard.press("ArrowRight")       # moved here, not by the link: 0.3 → 0.35
        page.wait_for_function(LAM_IN_URL, arg="0.35", timeout=REDRAW_WAIT_MS)
        page.wait_for_function(SETTLED, timeout=REDRAW_WAIT_MS)
        seen = {"Explorer": _sidebar_state(page)}
        nav = page.locator("[data-testid=stSidebarNav]")
        for title in ("Compare", "Rules & blocks"):
            nav.get_by_text(title, exact=True).click()
            page.wait_for_function(TITLE, arg=title, timeout=REDRAW_WAIT_MS)
            page.wait_for_function(IDLE, timeout=REDRAW_WAIT_MS)
            seen[title] = _sidebar_state(page)
            page.screenshot(path=ARTIFACTS / f"e2e-kept-{title.split()[0].lower()}.png",
                            full_page=True)
        url = page.url
    want = {"lam": pytest.approx(0.35), "tau": pytest.approx(0.5), "sample text": True,
            "sample": "storm"}
    for title, state in seen.items():
        assert state == want, (title, seen)
    query = parse_qs(urlparse(url).query)
    assert (query["lam"], query["tau"], query["prompt"]) == (["0.35"], ["0.5"], ["storm"]), url
    assert not messages, messages


# A cold link: Streamlit's own navigation, built from a pages/ folder's file names, would list
# "app" and the files' stems (ui's navigation comment says why the folder is app_pages/); the
# app's lists the titles in ui.PAGES.
FILE_NAMES = {"app"} | {Path(p.file).stem for p in ui.PAGES}
NAV_TITLES = """() => [...document.querySelectorAll(
    '[data-testid=stSidebarNavLink] [data-testid=stMarkdownContainer]')]
    .map(e => e.innerText.trim())"""


def test_a_link_to_a_page_opens_it_with_the_app_navigation_on_a_fresh_server(request,
                                                                             tmp_path):
    """The first request a freshly started server ever gets is a shared link to Rules & blocks
    with a dial setting: the page opens with the app's navigation, not Streamlit's file list,
    and the link's λ and τ are in its sidebar."""
    titles = [p.title for p in ui.PAGES]
    messages: list[str] = []
    with _streamlit_server(_server_env(request, tmp_path), "e2e-cold-link-streamlit.log") as url, \
            _browser_page(messages) as page:
        page.goto(url + "/rules?lam=0.6&tau=0.5", wait_until="domcontentloaded")
        page.wait_for_function(TITLE, arg="Rules & blocks", timeout=HEATMAP_WAIT_MS)
        page.wait_for_function(IDLE, timeout=HEATMAP_WAIT_MS)
        page.screenshot(path=ARTIFACTS / "e2e-cold-link.png", full_page=True)
        shown, state, at = page.evaluate(NAV_TITLES), _sidebar_state(page), page.url
    assert shown == titles, shown
    assert not FILE_NAMES & set(shown), shown
    assert (state["lam"], state["tau"]) == (pytest.approx(0.6), pytest.approx(0.5)), state
    assert urlparse(at).path == "/rules", at
    query = parse_qs(urlparse(at).query)
    assert (query["lam"], query["tau"]) == (["0.6"], ["0.5"]), at
    assert not messages, messages
    log = (ARTIFACTS / "e2e-cold-link-streamlit.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log


# -- every page, from a link, on a fresh server ------------------------------------------------

PAGE_PATHS = {p.title: ("/" if i == 0 else "/" + Path(p.file).stem)
              for i, p in enumerate(ui.PAGES)}
EXCEPTIONS = "() => document.querySelectorAll('[data-testid=stException]').length"
PAGE_TEXT = "() => document.querySelector('[data-testid=stMain]').innerText"
PLOT_TRACES = """key => { const gd = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
    return gd && gd.data ? gd.data.length : null; }"""


@pytest.fixture(scope="module")
def fresh_server(request, tmp_path_factory):
    """A server no browser has opened yet, reading the shipped single-seed sweep (many series,
    so the Tradeoff picker has something to offer)."""
    tmp_path = tmp_path_factory.mktemp("e2e-pages")
    env = {**_server_env(request, tmp_path),
           "LOCALIST_STUDY_CACHE": str(tmp_path / "no-study")}
    with _streamlit_server(env, "e2e-pages-streamlit.log") as url:
        yield url


# A page is there once its header is; the Explorer's heading is its heatmap.
HEADER_STARTS = """title => title === 'Explorer'
    ? !!document.querySelector('.st-key-heatmap .main-svg')
    : [...document.querySelectorAll('h2')].some(h => h.innerText.trim().startsWith(title))"""


# Drawn: idle, no placeholder skeleton left, and every plotly chart has drawn its SVG.
DRAWN = IDLE + """
    && !document.querySelector('[data-testid=stSkeleton]')
    && [...document.querySelectorAll('[data-testid=stPlotlyChart]')]
        .every(c => c.querySelector('.main-svg'))"""


def _open(page, url: str, title: str) -> None:
    """Open ``url`` and wait until the page headed ``title`` (About's header goes on) is drawn,
    and still drawn a moment later (a page's first run can end before its last element)."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(HEADER_STARTS, arg=title, timeout=HEATMAP_WAIT_MS)
    for _ in range(2):
        page.wait_for_function(DRAWN, timeout=HEATMAP_WAIT_MS)
        page.wait_for_timeout(1000)


def test_every_page_opens_from_a_link_and_reads_correctly(fresh_server):
    """Each page's link with a dial setting, the first on a server nobody has opened: the app's
    navigation, the page's header, the link's λ in the sidebar, no error box and no page error.
    A full-page screenshot of each goes to test-artifacts/ (e2e-page-<name>.png)."""
    titles = [p.title for p in ui.PAGES]
    for title, path in PAGE_PATHS.items():
        messages: list[str] = []
        with _browser_page(messages) as page:
            _open(page, f"{fresh_server}{path}?lam=0.6&tau=0.5", title)
            name = path.strip("/") or "explorer"
            page.screenshot(path=ARTIFACTS / f"e2e-page-{name}.png", full_page=True)
            nav, state = page.evaluate(NAV_TITLES), _sidebar_state(page)
            exceptions = page.evaluate(EXCEPTIONS)
        assert nav == titles, (title, nav)
        assert state["lam"] == pytest.approx(0.6), (title, state)
        assert exceptions == 0 and not messages, (title, exceptions, messages)
    log = (ARTIFACTS / "e2e-pages-streamlit.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log


def test_the_heatmap_is_on_a_projectors_first_screen(server):
    """At 1280×720 at least 60% of the Explorer's heatmap lies inside the first screen, with
    its numbers beside it; the screenshot goes to test-artifacts/ (e2e-first-screen.png)."""
    messages: list[str] = []
    with _browser_page(messages, size=(1280, 720)) as page:
        _open(page, server + "/", "Explorer")
        box = page.locator(".st-key-heatmap .js-plotly-plot").bounding_box()
        tile = page.get_by_text("In-block mass").first.bounding_box()
        page.screenshot(path=ARTIFACTS / "e2e-first-screen.png")
    visible = max(0.0, min(box["y"] + box["height"], 720) - max(box["y"], 0))
    assert visible / box["height"] >= 0.6, box
    assert tile["y"] < 720 and tile["x"] > box["x"], (tile, box)
    assert not messages, messages


def test_class_mode_shows_the_tour_and_next_changes_the_view(server):
    """``/?mode=class``: the tour bar's first step, then Next redraws the heatmap at the next
    step's λ (its title names it); screenshots go to test-artifacts/ (e2e-class-*.png)."""
    messages: list[str] = []
    with _browser_page(messages, size=(1280, 720)) as page:
        _open(page, server + "/?mode=class", "Explorer")
        first = page.evaluate(HEATMAP_STATE)
        assert page.get_by_text("Step 1 of").count() == 1
        page.screenshot(path=ARTIFACTS / "e2e-class-1.png")
        page.locator(".st-key-tour_next button").click()
        page.wait_for_function("() => [...document.querySelectorAll('p')].some("
                               "p => p.innerText.startsWith('Step 2 of'))",
                               timeout=REDRAW_WAIT_MS)
        page.wait_for_function(REDRAWN, arg=[first["z"], "0.5"], timeout=REDRAW_WAIT_MS)
        page.wait_for_function(SETTLED, timeout=REDRAW_WAIT_MS)
        after = page.evaluate(HEATMAP_STATE)
        page.screenshot(path=ARTIFACTS / "e2e-class-2.png")
    assert "λ=0 " in first["title"] and "λ=0.5 " in after["title"], (first, after)
    assert not messages, messages


# What a person should never read on a page's default view: internal names (snake_case),
# Python's None, e-notation, file and module names, folder paths.
INTERNAL = re.compile(r"\b[a-z]+_[a-z0-9_]+\b|\bNone\b|\b\d(?:\.\d+)?e[-+]?\d+\b"
                      r"|\b[\w/]+\.(?:py|md|json|safetensors|txt)\b|\bassets/|\blocalist_core\b")
# The main area's visible text: icon ligatures, KaTeX's hidden source and closed expanders out.
MAIN_TEXT = """() => { const m = document.querySelector('[data-testid=stMain]').cloneNode(true);
    m.querySelectorAll('[data-testid=stIconMaterial], .katex-mathml, details:not([open]) > div')
     .forEach(e => e.remove());
    return m.innerText; }"""


def test_no_page_shows_internal_names_none_e_notation_or_file_names(server):
    """Every page but Sweeps (an operator's page that names runs and folders) opened cold at
    1280×720: its visible text matches none of ``INTERNAL``."""
    found = {}
    for title, path in PAGE_PATHS.items():
        if title == "Sweeps":
            continue
        with _browser_page([], size=(1280, 720)) as page:
            _open(page, server + path, title)
            text = page.evaluate(MAIN_TEXT)
            found[title] = sorted({text[max(0, m.start() - 40):m.end() + 20]
                                   for m in INTERNAL.finditer(text)})
    assert not any(found.values()), found


def test_theory_formulas_are_rendered_as_mathematics(fresh_server):
    messages: list[str] = []
    with _browser_page(messages) as page:
        _open(page, fresh_server + PAGE_PATHS["Theory"], "Theory")
        page.wait_for_function("() => document.querySelectorAll('.katex').length >= 3",
                               timeout=REDRAW_WAIT_MS)
        text = page.evaluate(PAGE_TEXT)
        errors = page.evaluate("() => document.querySelectorAll('.katex-error').length")
        page.locator(".katex").first.screenshot(path=ARTIFACTS / "e2e-theory-formula.png")
    assert errors == 0
    for source in ("\\frac", "\\lambda", "\\tau", "$$"):      # KaTeX source never shows
        assert source not in text, source
    assert not messages, messages


def test_the_tradeoff_picker_adds_a_series_to_the_headline(fresh_server):
    messages: list[str] = []
    with _browser_page(messages) as page:
        _open(page, fresh_server + PAGE_PATHS["Tradeoff"], "Tradeoff")
        page.wait_for_function(PLOT_TRACES, arg="tradeoff_headline", timeout=REDRAW_WAIT_MS)
        before = page.evaluate(PLOT_TRACES, "tradeoff_headline")
        page.get_by_text("The data behind this page").click()     # the analysts' expander
        picker = page.locator(".st-key-tradeoff_series")
        picker.wait_for(state="visible", timeout=REDRAW_WAIT_MS)
        page.wait_for_timeout(500)                                # the expander's animation
        picker.click()
        option = page.get_by_role("option").filter(has_not_text="Select all").first
        picked = option.inner_text()
        option.click()
        page.keyboard.press("Escape")
        page.wait_for_function(f"() => ({PLOT_TRACES})('tradeoff_headline') > {before}",
                               timeout=REDRAW_WAIT_MS)
        page.wait_for_function(IDLE, timeout=REDRAW_WAIT_MS)
        after = page.evaluate(PLOT_TRACES, "tradeoff_headline")
        names = page.evaluate("""() => document.querySelector(
            '.st-key-tradeoff_headline .js-plotly-plot').data.map(t => t.name)""")
        page.screenshot(path=ARTIFACTS / "e2e-tradeoff-picked.png", full_page=True)
    assert after > before
    assert any(picked.strip() in (n or "") for n in names), (picked, names)
    assert not messages, messages
