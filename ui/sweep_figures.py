"""The Tradeoff page's figures from cached sweep results: labelled series per protocol, leaks as
red triangles, the papers' reports and reference lines, error bars of ± 1 sd across seeds (no
streamlit here)."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from localist_core.experiments.results import LEAK, PAPERS, finite
from ui.figures import inert

_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
            "#bcbd22", "#7f7f7f", "#393b79")
_REF_STYLE = {"ceiling": ("black", "dot"), "paper": ("crimson", "dash"),
              "baseline": ("grey", "dashdot")}
_CONTROLS = (("recent_b_mass", "recent-b control", "dot"),
             ("shifted_block_mass", "shifted-block control", "dash"))


def seed_error(pts: list[dict], key: str) -> dict | None:
    """± 1 sample sd across seeds (``<key>_sd``) as a plotly error bar, for points that average
    n > 1 seeds; None when no point does (a single-seed cache draws no bars)."""
    sds = [finite(p.get(f"{key}_sd")) if (p.get("n") or 1) > 1 else None for p in pts]
    if all(sd is None for sd in sds):
        return None
    return dict(type="data", array=[sd or 0.0 for sd in sds], visible=True, thickness=1.2,
                width=3)


def _add_series(fig, pts: list[dict], x: str, y: str, color: str, legend: bool, controls: bool,
                **rc) -> None:
    series = pts[0]["series"]
    leak = series.startswith(LEAK)
    color = "#d62728" if leak else color
    bars = {k: v for k, v in (("error_y", seed_error(pts, y)), ("error_x", seed_error(pts, x)))
            if v is not None}
    fig.add_trace(go.Scatter(
        x=[p[x] for p in pts], y=[p[y] for p in pts], mode="lines+markers+text",
        name=inert(series), legendgroup=series, showlegend=legend,
        text=[inert(p["label"]) for p in pts], textposition="top center",
        textfont=dict(size=10, color=color), customdata=[inert(p["run_id"]) for p in pts],
        marker=dict(symbol="triangle-up" if leak else "circle", size=11 if leak else 7,
                    color=color), line=dict(dash="dot" if leak else "solid", color=color),
        hovertemplate="%{customdata} · %{text}<br>%{x:.4g}, %{y:.4g}<extra></extra>", **bars),
        **rc)
    for key, name, dash in _CONTROLS if controls else ():
        cp = [p for p in pts if finite(p.get(key)) is not None]
        fig.add_trace(go.Scatter(x=[p[x] for p in cp], y=[p[key] for p in cp], mode="lines",
                                 name=inert(f"{series}: {name}"), legendgroup=series,
                                 showlegend=legend, line=dict(dash=dash, width=1, color=color)),
                      **rc)


def _add_line(fig, ref: dict, vertical: bool, lo: float, hi: float, legend: bool, **rc) -> None:
    color, dash = _REF_STYLE.get(ref.get("kind"), ("grey", "dot"))
    v = ref["value"]
    xs, ys = ([v, v], [lo, hi]) if vertical else ([lo, hi], [v, v])
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=inert(ref["label"]),
                             legendgroup=ref["label"], showlegend=legend, hoverinfo="name",
                             line=dict(color=color, dash=dash, width=1.5)), **rc)


def _padded(values: list[float], log: bool, pad: float = 0.08) -> list[float] | None:
    """An axis range with room for the point labels (log axes take log10 bounds)."""
    vals = [math.log10(v) for v in values if v > 0] if log else list(values)
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    margin = pad * ((hi - lo) or (1.0 if not log else 0.5))
    return [lo - margin, hi + margin]


def panel_figure(points: list[dict], x: str, x_title: str, panels: list[dict], *,
                 papers: list[dict] | None = None, vlines: list[dict] | None = None,
                 log_x: bool = False, controls: bool = False, height: int = 460) -> go.Figure:
    """Side-by-side panels sharing x and one legend: one labelled marker per point and a line per
    series, leaks as red triangles, the papers' reports as crimson crosses, reference lines
    (ceilings, baselines, the papers' figures) named in the legend.

    ``panels``: dicts with ``y``, ``title`` and optional ``hlines`` and ``log_y``. Points that
    average n > 1 seeds carry error bars of ± 1 sd across seeds (``seed_error``).
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.08)
    colors = {s: _PALETTE[i % len(_PALETTE)]
              for i, s in enumerate(dict.fromkeys(p["series"] for p in points))}
    shown: set[str] = set()
    for col, panel in enumerate(panels, start=1):
        y, rc, xs_extra = panel["y"], {"row": 1, "col": col}, []
        pts = [p for p in points if finite(p.get(x)) is not None and finite(p.get(y)) is not None]
        for series in dict.fromkeys(p["series"] for p in pts):
            _add_series(fig, [p for p in pts if p["series"] == series], x, y, colors[series],
                        series not in shown, controls, **rc)
            shown.add(series)
        if controls:
            up = [p for p in pts if finite(p.get("uniform_in_block_mass")) is not None]
            if up:
                fig.add_trace(go.Scatter(
                    x=[p[x] for p in up], y=[p["uniform_in_block_mass"] for p in up],
                    mode="markers", name="uniform-attention control", showlegend=col == 1,
                    marker=dict(symbol="line-ew-open", size=14, color="grey")), **rc)
        for p in papers or []:
            if finite(p.get(x)) is not None and finite(p.get(y)) is not None:
                fig.add_trace(go.Scatter(
                    x=[p[x]], y=[p[y]], mode="markers+text", name=inert(p["label"]),
                    legendgroup=p["label"], showlegend=p["label"] not in shown, text=[PAPERS],
                    textposition="bottom center", textfont=dict(color="crimson"),
                    marker=dict(symbol="x", size=13, color="crimson")), **rc)
                shown.add(p["label"])
                xs_extra.append(p[x])
        hl, vl = panel.get("hlines") or [], vlines or []
        xs = [p[x] for p in pts] + [r["value"] for r in vl] + xs_extra
        ys = [p[y] for p in pts] + [r["value"] for r in hl]
        for refs, vertical, span in ((hl, False, xs), (vl, True, ys)):
            for r in refs if span else ():
                _add_line(fig, r, vertical, min(span), max(span), r["label"] not in shown, **rc)
                shown.add(r["label"])
        fig.update_xaxes(title_text=x_title, type="log" if log_x else "linear",
                         range=_padded(xs, log_x), **rc)
        fig.update_yaxes(title_text=panel["title"], type="log" if panel.get("log_y") else
                         "linear", **rc)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(font=dict(size=11), tracegroupgap=2))
    return fig


def points_figure(points: list[dict], x: str, y: str, x_title: str, y_title: str, *,
                  papers: list[dict] | None = None, hlines: list[dict] | None = None,
                  vlines: list[dict] | None = None, log_x: bool = False, log_y: bool = False,
                  controls: bool = False, height: int = 440) -> go.Figure:
    """A single-panel ``panel_figure``."""
    return panel_figure(points, x, x_title, [{"y": y, "title": y_title, "hlines": hlines,
                                              "log_y": log_y}], papers=papers, vlines=vlines,
                        log_x=log_x, controls=controls, height=height)
