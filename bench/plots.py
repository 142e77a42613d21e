"""Pareto figures of one run, from its result files only; the public import path of the
plotting and report functions (``migm-bench plot`` / ``report``).

Figures follow the speed/quality trade-off plots of the acceleration papers (e.g.
MIGM-Shortcut, arXiv 2602.23996, Fig. 1; TaylorSeer / ToCa quality-vs-speedup plots):
x = latency per image (log scale) with speedup vs vanilla on the top axis, y = one quality
metric, one line per accelerator through its sweep, vanilla as a star, and the overall
Pareto frontier as a dashed step line. The y axis is named by the metric's label as its spec
declared it (``MetricInfo.label``, recorded in run.json). What is plotted comes from
``bench.plot_data``, the point labels from ``bench.label_placement``, the Markdown table from
``bench.report``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import UnknownNameError, suggest
from bench.label_placement import place_labels
from bench.plot_data import (  # noqa: F401 (public import path)
    VANILLA,
    interval_frontier,
    is_ok,
    metric_directions,
    metric_label,
    metric_name,
    pareto_frontier,
    plotted_points,
    quality_metrics,
    read_run,
    short_tag,
    vanilla_latency,
)
from bench.report import report_markdown, saving_realised  # noqa: F401 (public import path)


def _plain_log_ticks(axis, suffix: str = "") -> None:
    """Log-axis tick labels as plain numbers ('0.2', '3×') instead of '2×10^-1';
    minor ticks labelled at 2, 3 and 5 times a power of ten only."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def label(value: float, _pos: int) -> str:
        return f"{value:.3g}{suffix}" if value > 0 else ""

    def minor_label(value: float, pos: int) -> str:
        if value <= 0:
            return ""
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
        return label(value, pos) if mantissa in (2.0, 3.0, 5.0) else ""

    axis.set_major_locator(LogLocator(base=10))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(minor_label))


def _errors(center: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """(2, n) asymmetric error-bar lengths; 0 where the interval is unknown."""
    c = center.to_numpy(float)
    below = np.nan_to_num(c - low.to_numpy(float), nan=0.0).clip(min=0)
    above = np.nan_to_num(high.to_numpy(float) - c, nan=0.0).clip(min=0)
    return np.vstack([below, above])


def _draw_points(ax, rows: pd.DataFrame, color: str, **style) -> None:
    """Markers with both error bars (speed-up and quality intervals)."""
    if rows.empty:
        return
    ax.errorbar(rows["speedup"], rows["value"], xerr=_errors(rows["speedup"], rows["speedup_low"], rows["speedup_high"]),
                yerr=_errors(rows["value"], rows["value_low"], rows["value_high"]), fmt="none", ecolor=color,
                elinewidth=0.8, alpha=0.6, capsize=1.5, zorder=3)  # fmt: skip
    ax.plot(rows["speedup"], rows["value"], "o", color=color, ms=5, zorder=4, **style)


def _draw_metric(fig, points: pd.DataFrame, label: str, v_lat: float | None, title: str) -> list:
    """One Pareto panel on ``fig``: x = speed-up vs vanilla with its interval, y = the metric
    with its interval; one line per accelerator through its own non-dominated points,
    dominated ones hollow, vanilla a star, the dashed overall frontier; every point labelled
    by its whole config tag, placed so labels neither overlap nor leave the axes (the legend
    sits outside). Returns the label artists."""
    ax = fig.add_subplot(1, 1, 1)
    accelerators = sorted(points["accelerator"].unique(), key=lambda a: (a != VANILLA, a))
    colors = {a: f"C{i % 10}" for i, a in enumerate(a for a in accelerators if a != VANILLA)}
    for acc in accelerators:
        rows = points[points["accelerator"] == acc].sort_values("speedup")
        if acc == VANILLA:
            _draw_points(ax, rows, "black", alpha=0)  # its quality interval, under the star
            ax.plot(
                rows["speedup"], rows["value"], "*", color="gold", mec="black", ms=14, label=VANILLA, zorder=5
            )
            continue
        higher = bool(rows["higher_is_better"].iloc[0])
        own_front = interval_frontier(
            (rows["speedup"], rows["speedup_low"], rows["speedup_high"]),
            (rows["value"], rows["value_low"], rows["value_high"]),
            higher,
        )
        own, rest = rows[own_front], rows[[not f for f in own_front]]
        ax.plot(own["speedup"], own["value"], "-", color=colors[acc], lw=1.5, label=acc, zorder=4)
        _draw_points(ax, own, colors[acc])
        _draw_points(ax, rest, colors[acc], mfc="white")  # dominated within its own sweep
    front = points[points["on_frontier"]].sort_values("speedup", ascending=False)
    if len(front):
        higher = bool(front["higher_is_better"].iloc[0])
        best = front["value"].cummax() if higher else front["value"].cummin()  # staircase from the fastest
        ax.step(front["speedup"], best, where="pre", ls="--", color="gray", lw=1.0, label="frontier (95 % intervals)",
                zorder=2)  # fmt: skip
    is_ref = (points["accelerator"] == VANILLA) & (points["config_tag"].fillna("default") == "default")
    if not is_ref.any():  # a metric against vanilla: vanilla is the reference, not a point
        ax.axvline(1.0, color="black", ls=":", lw=1.2, label="vanilla (the reference)", zorder=1)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)  # room for the point labels
    _plain_log_ticks(ax.xaxis, suffix="×")
    ax.set_xlabel("speed-up vs vanilla (median of paired rounds, 95 % interval; log scale)")
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    fig.legend(fontsize=7, loc="outside right upper")
    if v_lat:
        top = ax.secondary_xaxis(
            "top",
            functions=(
                lambda s: 1e3 * v_lat / np.maximum(s, 1e-30),
                lambda x: 1e3 * v_lat / np.maximum(x, 1e-30),
            ),
        )
        _plain_log_ticks(top.xaxis)
        top.set_xlabel("latency per image [ms] (vanilla's / speed-up)")
    return place_labels(fig, ax, points)


def plot_run(
    run_dir: str | Path, out_dir: str | Path | None = None, quality: Sequence[str] | None = None
) -> list[Path]:
    """Write one Pareto figure per quality metric (PNG + PDF) and pareto_points.csv into
    ``out_dir`` (default ``<run_dir>/plots``); returns the written paths. ``quality``: only
    these metrics on the quality axis (e.g. ["clip_score"]; ``migm-bench plot --quality``);
    UnknownNameError for one the run has no plotted value of."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    points = plotted_points(run_dir)
    metrics = list(points["metric"].unique())
    for name in quality or ():
        if name not in metrics:
            known = suggest(name, metrics) if metrics else " The run has no plotted quality metric."
            raise UnknownNameError(f"no quality metric {name!r} in {run_dir}.{known}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for metric in quality or metrics:
        fig, _labels = pareto_figure(run_dir, metric, points)
        for ext in ("png", "pdf"):
            path = out_dir / f"pareto_{metric}.{ext}"
            fig.savefig(path, dpi=150, metadata={"CreationDate": None} if ext == "pdf" else None)
            written.append(path)
    csv = out_dir / "pareto_points.csv"
    points.to_csv(csv, index=False)
    written.append(csv)
    return written


def pareto_figure(run_dir: str | Path, metric: str, points: pd.DataFrame | None = None):
    """(figure, label artists) of one metric's Pareto panel, from the run's result files."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    summary, measurements, meta = read_run(run_dir)
    points = plotted_points(run_dir) if points is None else points
    higher, unit = metric_directions(quality_metrics(summary), measurements, meta)[metric]
    model = meta.get("base_model") or meta.get("model") or ""
    if isinstance(model, dict):  # run.json: {"model": {"spec": ..., "name": ..., ...}}
        model = str(model.get("name") or model.get("spec") or "")
    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    title = f"{model + ': ' if model else ''}{metric_name(metric, meta)} vs speed-up"
    labels = _draw_metric(
        fig, points[points["metric"] == metric], metric_label(metric, higher, unit, meta), vanilla_latency(summary),
        title,
    )  # fmt: skip
    return fig, labels
