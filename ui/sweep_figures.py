"""The Tradeoff page's figures and captions from cached sweep results: which curves answer what
locality costs, one series per curve with point labels placed so that none covers another, error
bars of ± 1 sd across seeds, leaks as red triangles, the papers' reports as crimson crosses and
reference lines; the block arrangements against the in-block keys their queries see. A chart's
axes are set by what it draws (no streamlit here)."""
from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from localist_core.experiments.results import LEAK, PAPERS
from localist_core.experiments.stats import finite
from ui.figures import inert
from ui.names import series_name

_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
            "#bcbd22", "#7f7f7f", "#393b79")
_REF_STYLE = {"ceiling": ("black", "dot"), "paper": ("crimson", "dash"),
              "baseline": ("grey", "dashdot")}
_CONTROLS = (("recent_b_mass", "recent-b control", "dot"),
             ("shifted_block_mass", "shifted-block control", "dash"))
# The headline's locality measures: key → (axis title, a value as the caption names it).
LOCALITY_MEASURES = {"in_block_mass": ("in-block mass", "in-block mass {:.2f}"),
                     "entropy_bits": ("attention entropy (bits)", "entropy {:.2f} bits")}
# The shipped dial checkpoint is used at β = 64 (REPRODUCTION.md); a sweep evaluated at that β
# names its runs "dial-beta64" (sweep.plan_runs), so their variant is:
SHIPPED_DIAL = "beta64"

# -- which curves, and what they show ------------------------------------------------------------


def headline_series(points: list[dict]) -> list[str]:
    """The curves that say what locality costs: the attention penalty as trained on fixed blocks
    and the dial-protocol model (at the shipped β = 64 where the cache has it). A cache with
    neither gets its first series."""
    def first(want) -> str | None:
        return next((p["series"] for p in points if want(p)), None)

    penalty = first(lambda p: p.get("curve") == "trained" and p.get("protocol") == "attention"
                    and not p.get("variant"))
    dial = (first(lambda p: p.get("curve") == "dial" and p.get("variant") == SHIPPED_DIAL)
            or first(lambda p: p.get("curve") == "dial" and not p.get("variant")))
    found = [s for s in (penalty, dial) if s]
    return found or ([points[0]["series"]] if points else [])


def most_seeds(points: list[dict]) -> int:
    """The most training seeds behind one point (0 without points)."""
    return max((p.get("n") or 1 for p in points), default=0)


def seeds_note(points: list[dict]) -> str:
    """How many seeds stand behind the points, for the caption under the cache's name."""
    n = most_seeds(points)
    if n <= 1:
        return ("every point is one training seed, so no difference between points is "
                "established here")
    return (f"a point averages up to {n} training seeds, drawn as their mean with error bars of "
            "± 1 sample sd across seeds; a point without bars is one seed")


FREE = 0.02    # a perplexity rise below 2% counts as "nearly free" (the family's smallest effect)


def headline_message(points: list[dict], series: str) -> str | None:
    """The page's one sentence, from the means drawn along ``series`` (the penalty trained for
    each λ): the most locality bought for under ``FREE`` more perplexity, and what cutting
    cross-block attention altogether costs. None where the series lacks λ = 0 or a local end."""
    pts = sorted((p for p in points if p["series"] == series
                  and finite(p.get("perplexity")) is not None
                  and finite(p.get("in_block_mass")) is not None), key=lambda p: p["locality"])
    base = next((p for p in pts if p["locality"] == 0), None)
    if base is None or len(pts) < 2:
        return None
    rise = {id(p): p["perplexity"] / base["perplexity"] - 1 for p in pts}
    cheap = max((p for p in pts[1:] if rise[id(p)] < FREE), default=None,
                key=lambda p: p["in_block_mass"])
    end = max(pts, key=lambda p: (p["in_block_mass"], p["locality"]))
    parts = []
    if cheap is not None:
        parts.append(f"a little locality is nearly free: trained at λ = {cheap['locality']:g}, "
                     f"{cheap['in_block_mass']:.0%} of attention stays in its block (against "
                     f"{base['in_block_mass']:.0%} at λ = 0) for {rise[id(cheap)]:+.1%} "
                     "perplexity")
    if end is not cheap and end["in_block_mass"] > 0.99:
        parts.append(f"cutting cross-block attention altogether (λ = {end['locality']:g}) costs "
                     f"{rise[id(end)]:+.0%} perplexity")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _verdict(p: dict) -> str:
    """What the paired seeds say of a rise, as a reading: the verdicts are the pre-registered
    family's (REPRODUCTION.md), so a page states no finding of its own."""
    n, ci = p.get("perplexity_rise_n") or 0, finite(p.get("perplexity_rise_ci95"))
    if n < 2 or ci is None:
        return f"no interval ({n or 'no'} seed{'' if n == 1 else 's'} at both ends)"
    side = "excludes" if p.get("perplexity_rise_established") else "includes"
    return f"its 95% interval ± {ci:.1f} over {n} paired seeds {side} 0"


def cost_caption(points: list[dict], series: list[str], x: str) -> str:
    """One sentence: along each of ``series``, valid perplexity at λ = 0 and at its most local
    point (the means drawn), and whether the rise is established by its paired-by-seed interval
    (``perplexity_rise_*``); ``x`` (a key of ``LOCALITY_MEASURES``) is shown beside each end."""
    def at(p: dict, ppl: bool = False) -> str:
        v = finite(p.get(x))
        more = [LOCALITY_MEASURES[x][1].format(v)] * (v is not None) + [
            f"valid perplexity {p['perplexity']:.1f}"] * ppl
        return f"λ = {p['locality']:g}" + (f" ({', '.join(more)})" if more else "")

    parts = []
    for name in series:
        pts = sorted((p for p in points if p["series"] == name
                      and finite(p.get("perplexity")) is not None), key=lambda p: p["locality"])
        base = next((p for p in pts if p["locality"] == 0), None)
        if not pts:
            continue
        last = pts[-1]
        if base is None:
            parts.append(f"{series_name(name)} has no λ = 0 point to compare with, so its "
                         "cost is not established")
        elif last is base:
            parts.append(f"{series_name(name)} has only {at(base, True)} in this cache, so its "
                         "cost is not established")
        else:
            diff = last["perplexity"] - base["perplexity"]
            parts.append(f"{series_name(name)} goes from {base['perplexity']:.1f} at {at(base)} to "
                         f"{last['perplexity']:.1f} at {at(last)}, {diff:+.1f} "
                         f"({100 * diff / base['perplexity']:+.0f}%), {_verdict(last)}")
    if not parts:
        return "No curve of this cache has a valid perplexity to compare."
    return "Valid perplexity along each curve: " + "; ".join(parts) + "."


# -- placing point labels ------------------------------------------------------------------------
# Pixel geometry of a figure about FIG_WIDTH wide (Streamlit's wide layout): one character of the
# 10-px label font, a line, the gap between a marker and its label, a marker's half-width.
FIG_WIDTH, CHAR_PX, LINE_PX, GAP_PX, MARKER_PX = 900, 6.2, 13.0, 5.0, 4.0
POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right",
             "top left", "bottom right", "bottom left")


def label_box(px: float, py: float, text: str, position: str) -> tuple[float, ...]:
    """The pixel box (x0, y0, x1, y1), y upward, of ``text`` drawn at ``position`` (plotly's
    textposition) of a marker at (px, py)."""
    w, h = CHAR_PX * len(text), LINE_PX
    vert, horiz = position.split()
    cx = px + {"left": -1, "center": 0, "right": 1}[horiz] * (w / 2 + GAP_PX)
    cy = py + {"bottom": -1, "middle": 0, "top": 1}[vert] * (h / 2 + GAP_PX)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def boxes_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(groups: list[list[tuple[float, float, str]]], width: float,
                 height: float) -> list[list[str | None]]:
    """A textposition for each labelled marker (px, py, text) of each series, or None where every
    position would cover a placed label or any marker, or leave the width × height panel. The
    ends of a series go first, then its inner points; a dropped label stays in the hover."""
    markers = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX)
               for g in groups for x, y, _ in g if math.isfinite(x) and math.isfinite(y)]
    taken: list[tuple[float, ...]] = []
    out = []
    for g in groups:
        where: list[str | None] = [None] * len(g)
        for i in sorted(range(len(g)), key=lambda i: (0 < i < len(g) - 1, i)):
            x, y, text = g[i]
            if not text or not (math.isfinite(x) and math.isfinite(y)):
                continue
            for pos in POSITIONS:
                box = label_box(x, y, text, pos)
                inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
                if inside and not any(boxes_overlap(box, o) for o in taken + markers):
                    where[i] = pos
                    taken.append(box)
                    break
        out.append(where)
    return out


def _px(v, rng: list[float] | None, log: bool, span: float) -> float:
    v = finite(v)
    if v is None or rng is None or (log and v <= 0):
        return math.nan
    v = math.log10(v) if log else v
    return (v - rng[0]) / ((rng[1] - rng[0]) or 1.0) * span


# -- figures -------------------------------------------------------------------------------------


def seed_error(pts: list[dict], key: str) -> dict | None:
    """± 1 sample sd across seeds (``<key>_sd``) as a plotly error bar, for points that average
    n > 1 seeds; None when no point does (a single-seed cache draws no bars)."""
    sds = [finite(p.get(f"{key}_sd")) if (p.get("n") or 1) > 1 else None for p in pts]
    if all(sd is None for sd in sds):
        return None
    return dict(type="data", array=[sd or 0.0 for sd in sds], visible=True, thickness=1.2,
                width=3)


def _spread(pts: list[dict], key: str) -> list[float]:
    """Every value of ``key`` with its ± sd bar ends: what an axis must show."""
    out = []
    for p in pts:
        v, sd = finite(p.get(key)), finite(p.get(f"{key}_sd")) or 0.0
        if v is not None:
            out += [v - sd, v + sd] if (p.get("n") or 1) > 1 else [v]
    return out


def _padded(values: list[float], log: bool, pad: float = 0.1) -> list[float] | None:
    """An axis range with room for the point labels (log axes take log10 bounds)."""
    vals = [math.log10(v) for v in values if v > 0] if log else list(values)
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    margin = pad * ((hi - lo) or (1.0 if not log else 0.5))
    return [lo - margin, hi + margin]


def _series_trace(pts: list[dict], x: str, y: str, color: str, legend: bool,
                  where: list[str | None]) -> go.Scatter:
    series = pts[0]["series"]
    leak = series.startswith(LEAK)
    color = "#d62728" if leak else color
    bars = {k: v for k, v in (("error_y", seed_error(pts, y)), ("error_x", seed_error(pts, x)))
            if v is not None}
    return go.Scatter(
        x=[p[x] for p in pts], y=[p[y] for p in pts], mode="lines+markers+text",
        name=inert(series_name(series)), legendgroup=series, showlegend=legend,
        text=[inert(p["label"]) if w else "" for p, w in zip(pts, where)],
        textposition=[w or "top center" for w in where], textfont=dict(size=10, color=color),
        customdata=[[inert(p.get("run_id", "")), inert(p["label"]), p.get("n") or 1]
                    for p in pts],
        marker=dict(symbol="triangle-up" if leak else "circle", size=11 if leak else 7,
                    color=color), line=dict(dash="dot" if leak else "solid", color=color),
        hovertemplate="%{customdata[0]} · %{customdata[1]}<br>%{x:.4g}, %{y:.4g} "
                      "(%{customdata[2]} seed(s))<extra></extra>", **bars)


def _add_line(fig, ref: dict, vertical: bool, lo: float, hi: float, legend: bool, **rc) -> None:
    color, dash = _REF_STYLE.get(ref.get("kind"), ("grey", "dot"))
    v = ref["value"]
    xs, ys = ([v, v], [lo, hi]) if vertical else ([lo, hi], [v, v])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=inert(ref["label"]),
                             legendgroup=ref["label"], showlegend=legend, hoverinfo="name",
                             line=dict(color=color, dash=dash, width=1.5)), **rc)


def panel_figure(points: list[dict], x: str, x_title: str, panels: list[dict], *,
                 papers: list[dict] | None = None, vlines: list[dict] | None = None,
                 log_x: bool = False, controls: bool = False, height: int = 460) -> go.Figure:
    """Side-by-side panels sharing x and one legend below them: a line per series with its
    points labelled where the label covers nothing (``place_labels``), leaks as red triangles,
    the papers' reports as crimson crosses, reference lines (ceilings, baselines, the papers'
    figures) named in the legend. Each axis is set by what its panel draws, bars included.

    ``panels``: dicts with ``y``, ``title`` and optional ``hlines``, ``log_y`` and ``min_span``
    (a linear axis at least that tall, its top just above the highest point, so that
    differences far below it do not fill the panel). Points that average n > 1 seeds carry
    error bars of ± 1 sd across seeds (``seed_error``).
    """
    n = len(panels)
    fig = make_subplots(rows=1, cols=n, horizontal_spacing=0.08)
    colors = {s: _PALETTE[i % len(_PALETTE)]
              for i, s in enumerate(dict.fromkeys(p["series"] for p in points))}
    width, plot_h = (FIG_WIDTH - 80) * (1 - 0.08 * (n - 1)) / n, height - 120
    shown: set[str] = set()
    for col, panel in enumerate(panels, start=1):
        y, rc, log_y = panel["y"], {"row": 1, "col": col}, bool(panel.get("log_y"))
        pts = [p for p in points if finite(p.get(x)) is not None and finite(p.get(y)) is not None]
        pp = [p for p in papers or [] if finite(p.get(x)) is not None
              and finite(p.get(y)) is not None]
        hl, vl = panel.get("hlines") or [], vlines or []
        ctl = [p[k] for p in pts for k, _, _ in _CONTROLS + (("uniform_in_block_mass", 0, 0),)
               if controls and finite(p.get(k)) is not None]
        xs = _spread(pts, x) + [p[x] for p in pp] + [r["value"] for r in vl]
        ys = _spread(pts, y) + [p[y] for p in pp] + [r["value"] for r in hl] + ctl
        xr, yr = _padded(xs, log_x), _padded(ys, log_y)
        tall = panel.get("min_span")
        if tall and yr and not log_y and yr[1] - yr[0] < tall:
            # Taller, with room for labels above the points, never above the lowest one.
            top = yr[1] + min(tall / 10, tall - (yr[1] - yr[0]))
            yr = [top - tall, top]
        groups = {s: [p for p in pts if p["series"] == s]
                  for s in dict.fromkeys(p["series"] for p in pts)}
        marks = [[(_px(p[x], xr, log_x, width), _px(p[y], yr, log_y, plot_h),
                   PAPERS if p.get("source") == PAPERS else p["label"])
                  for p in g] for g in [*groups.values(), *([p] for p in pp)]]
        where = place_labels(marks, width, plot_h)
        for (series, g), w in zip(groups.items(), where):
            fig.add_trace(_series_trace(g, x, y, colors[series], series not in shown, w), **rc)
            shown.add(series)
        for key, name, dash in _CONTROLS if controls else ():
            for series, g in groups.items():
                cp = [p for p in g if finite(p.get(key)) is not None]
                fig.add_trace(go.Scatter(
                    x=[p[x] for p in cp], y=[p[key] for p in cp], mode="lines",
                    name=inert(f"{series_name(series)}: {name}"), legendgroup=series,
                    showlegend=col == 1,
                    line=dict(dash=dash, width=1, color=colors[series])), **rc)
        up = [p for p in pts if controls and finite(p.get("uniform_in_block_mass")) is not None]
        if up:
            fig.add_trace(go.Scatter(
                x=[p[x] for p in up], y=[p["uniform_in_block_mass"] for p in up],
                mode="markers", name="uniform-attention control", showlegend=col == 1,
                marker=dict(symbol="line-ew-open", size=14, color="grey")), **rc)
        for p, w in zip(pp, where[len(groups):]):
            fig.add_trace(go.Scatter(
                x=[p[x]], y=[p[y]], mode="markers+text", name=inert(p["label"]),
                legendgroup=p["label"], showlegend=p["label"] not in shown,
                text=[PAPERS if w[0] else ""], textposition=w[0] or "bottom center",
                textfont=dict(color="crimson"), hoverinfo="name",
                marker=dict(symbol="x", size=13, color="crimson")), **rc)
            shown.add(p["label"])
        for refs, vertical, span in ((hl, False, xs), (vl, True, ys)):
            for r in refs if span else ():
                _add_line(fig, r, vertical, min(span), max(span), r["label"] not in shown, **rc)
                shown.add(r["label"])
        fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear", range=xr,
                         automargin=True, **rc)
        fig.update_yaxes(title_text=panel["title"], type="log" if log_y else "linear",
                         range=yr, automargin=True, **rc)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0,
                                  font=dict(size=11)))
    return fig


def points_figure(points: list[dict], x: str, y: str, x_title: str, y_title: str, *,
                  papers: list[dict] | None = None, hlines: list[dict] | None = None,
                  vlines: list[dict] | None = None, log_x: bool = False, log_y: bool = False,
                  controls: bool = False, height: int = 440) -> go.Figure:
    """A single-panel ``panel_figure``."""
    return panel_figure(points, x, x_title, [{"y": y, "title": y_title, "hlines": hlines,
                                              "log_y": log_y}], papers=papers, vlines=vlines,
                        log_x=log_x, controls=controls, height=height)


HERE = "you are here"


def nearest_dial_point(points: list[dict], locality: float) -> dict | None:
    """The dial curve's point (``curve == "dial"``) whose λ_f is nearest ``locality`` (the
    sidebar's λ), preferring the shipped β; None without a dial curve."""
    dial = [p for p in points if p.get("curve") == "dial"]
    shipped = [p for p in dial if p.get("variant") == SHIPPED_DIAL] or dial
    return min(shipped, key=lambda p: abs(p["locality"] - locality), default=None)


def mark_here(fig: go.Figure, points: list[dict], x: str, y: str, locality: float) -> None:
    """A star on the dial curve at the sidebar's λ (its nearest evaluated λ_f), so a visitor
    sees where the Explorer's model sits on the tradeoff."""
    p = nearest_dial_point(points, locality)
    if p is None or finite(p.get(x)) is None or finite(p.get(y)) is None:
        return
    fig.add_trace(go.Scatter(
        x=[p[x]], y=[p[y]], mode="markers", name=f"{HERE} (λ = {p['locality']:g})",
        marker=dict(symbol="star", size=18, color="#ff7f0e", line=dict(width=1, color="black")),
        hovertemplate=f"{HERE}: the Explorer's dial at λ = {p['locality']:g}<extra></extra>"))


# -- blocks against their context-matched control ------------------------------------------------
# The fixed block sizes make one line against the keys a query sees in its block ("more context");
# each adaptive partition is a marker of its own, read against that line at its own x.
FIXED_LINE = "fixed blocks (b = block size)"
ADAPTIVE_SYMBOLS = {"punctuation": "diamond", "recruited": "square", "bigram": "hexagon"}
VISIBLE_KEYS = "visible_in_block_keys"
# The in-block panel spans at least this much of the [0, 1] share: at λ = 0.6 every partition
# sits at 1.000 and a range fitted to the points would blow differences of 1e-4 up to full height.
SHARE_MIN_SPAN = 0.1


def block_control_figure(points: list[dict], height: int = 440) -> go.Figure:
    """Valid perplexity and in-block mass against the mean number of in-block keys a query sees
    (``comparisons.block_control_points``): the fixed sizes joined by one line, ordered by
    keys, each adaptive partition a distinct marker, ± 1 sd across seeds where n > 1, every
    point labelled where the label covers nothing (``panel_figure``)."""
    fixed = sorted((p for p in points if p.get("arrangement") == "fixed"),
                   key=lambda p: (finite(p.get(VISIBLE_KEYS)) is None,
                                  finite(p.get(VISIBLE_KEYS)) or 0.0))
    drawn = [{**p, "series": FIXED_LINE} for p in fixed] + [
        p for p in points if p.get("arrangement") != "fixed"]
    fig = panel_figure(drawn, VISIBLE_KEYS, "visible in-block keys per query (valid, mean)",
                       [{"y": "perplexity", "title": "valid perplexity"},
                        {"y": "in_block_mass", "title": "in-block mass",
                         "min_span": SHARE_MIN_SPAN}], height=height)
    adaptive = dict.fromkeys(p["series"] for p in drawn if p["series"] != FIXED_LINE)
    for i, name in enumerate(adaptive):
        symbol = ADAPTIVE_SYMBOLS.get(name, ("star", "cross", "triangle-down")[i % 3])
        fig.update_traces(selector=dict(name=inert(series_name(name))), mode="markers+text",
                          marker=dict(symbol=symbol, size=12))
    return fig


def has_visible_keys(points: list[dict]) -> bool:
    """Whether any point records the in-block keys its queries see (older caches do not)."""
    return any(finite(p.get(VISIBLE_KEYS)) is not None for p in points)


def _difference_words(row: dict | None) -> str:
    if row is None:
        return "no seed in common, so no paired difference"
    if row["lo"] is None:
        return "no interval (one seed)"
    side = "excludes" if row["established"] else "includes"
    return (f"95% interval {row['lo']:+.1f} to {row['hi']:+.1f} over {row['n']} paired seeds "
            f"{side} 0: a reading, not a finding")


def block_control_caption(points: list[dict], rows: list[dict]) -> str:
    """One sentence per adaptive partition: the in-block keys its queries see, the fixed size
    whose queries see the nearest number (its context-matched control), both valid
    perplexities and the paired difference's verdict from ``rows``
    (``comparisons.block_control_differences``)."""
    fixed = [p for p in points if p.get("arrangement") == "fixed"
             and finite(p.get(VISIBLE_KEYS)) is not None and finite(p.get("perplexity"))]
    parts = []
    for p in points:
        keys = finite(p.get(VISIBLE_KEYS))
        if p.get("arrangement") == "fixed" or keys is None or not finite(p.get("perplexity")):
            continue
        if not fixed:
            parts.append(f"{p['series']} blocks let a query see {keys:.2f} in-block keys, and no "
                         "fixed size here records its keys to compare with")
            continue
        near = min(fixed, key=lambda f: abs(f[VISIBLE_KEYS] - keys))
        row = next((r for r in rows if r["partition"] == p["series"]
                    and r["control"] == near["series"] and r["metric"] == "perplexity"), None)
        diff = "" if row is None or row["mean"] is None else f"{row['mean']:+.1f}; "
        parts.append(f"{p['series']} blocks let a query see {keys:.2f} in-block keys, nearest to "
                     f"fixed blocks of {near['block_size']} ({near[VISIBLE_KEYS]:.2f}): valid "
                     f"perplexity {p['perplexity']:.1f} against {near['perplexity']:.1f} "
                     f"({diff}{_difference_words(row)})")
    if not parts:
        return "No adaptive partition at this λ records the in-block keys its queries see."
    return "; ".join(parts) + "."
