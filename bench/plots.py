"""Pareto figures and a Markdown report of one run, from its result files only.

Reads ``<run_dir>/summary.csv`` (one row per accelerator configuration), the tidy
``measurements.parquet`` (or ``measurements.csv``) for each metric's direction and unit,
and ``run.json`` for the header. Nothing here imports a model or an accelerator.

Figures follow the speed/quality trade-off plots of the acceleration papers (e.g.
MIGM-Shortcut, arXiv 2602.23996, Fig. 1; TaylorSeer / ToCa quality-vs-speedup plots):
x = latency per image (log scale) with speedup vs vanilla on the top axis, y = one quality
metric, one line per accelerator through its sweep, vanilla as a star, and the overall
Pareto frontier as a dashed step line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.results import CI_HIGH, CI_LOW, metric_columns

OK_STATUSES = {"ok", ""}
LOWER_IS_BETTER_FALLBACK = ("fid", "kid", "lpips", "mse", "error")  # only when no table says the direction
PRETTY_NAMES = {
    "class_accuracy": "class accuracy", "psnr_vs_vanilla": "PSNR vs vanilla", "ssim_vs_vanilla": "SSIM vs vanilla",
    "token_agreement": "token agreement", "feature_cosine": "feature cosine",
}  # fmt: skip
# Fallback names of set-level metrics from runs whose run.json records no label: which feature
# network computed them is unknown, and a bare "FID" reads as Inception FID.
UNLABELLED = {"fid": "FID", "kid": "KID", "inception_score": "Inception score"}
VANILLA = "vanilla"
Estimates = tuple[Sequence[float], Sequence[float], Sequence[float]]  # (values, lows, highs)


# ------------------------------------------------------------------ pure computations


def pareto_frontier(latency: Sequence[float], quality: Sequence[float], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point dominates, sorted by latency (ascending).

    j dominates i when j is no slower and no worse, and strictly better in one of the two.
    Of exactly equal points only the first (lowest index) is kept. NaN points are ignored.
    """
    lat = np.asarray(latency, dtype=float)
    q = np.asarray(quality, dtype=float)
    if lat.shape != q.shape:
        raise ValueError(f"latency and quality lengths differ: {lat.shape} vs {q.shape}")
    good = q if higher_is_better else -q  # larger = better from here on
    valid = np.flatnonzero(np.isfinite(lat) & np.isfinite(good))
    # fastest first; at equal latency the best first; then by index (stable)
    order = valid[np.lexsort((valid, -good[valid], lat[valid]))]
    frontier, best = [], -math.inf
    for i in order:
        if good[i] > best:  # strictly better than everything at least as fast
            frontier.append(int(i))
            best = good[i]
    return frontier


def is_ok(status: Any) -> bool:
    """A row that ran to completion (status "ok"; an empty status counts as ok)."""
    if status is None or (isinstance(status, float) and math.isnan(status)):
        return True
    return str(status).strip().lower() in OK_STATUSES


# ------------------------------------------------------------------ reading a run


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """(summary, measurements or None, run.json dict or {}); clear error when summary.csv is missing."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.csv"
    if not summary_path.is_file():
        raise FileNotFoundError(f"no summary.csv in {run_dir} (is it a results/<run> folder?)")
    summary = pd.read_csv(summary_path, keep_default_na=True)
    missing = [c for c in ("accelerator", "config_tag", "latency_s_median") if c not in summary.columns]
    if missing:
        raise ValueError(f"{summary_path} lacks required columns {missing}")
    summary["config_tag"] = summary["config_tag"].fillna("").astype(str)
    if "status" not in summary.columns:
        summary["status"] = "ok"
    measurements = None
    if (run_dir / "measurements.parquet").is_file():
        measurements = pd.read_parquet(run_dir / "measurements.parquet")
    elif (run_dir / "measurements.csv").is_file():
        measurements = pd.read_csv(run_dir / "measurements.csv")
    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    return summary, measurements, meta


def quality_metrics(summary: pd.DataFrame) -> list[str]:
    """The quality-metric columns of summary.csv (beyond the fixed columns and the intervals)."""
    return metric_columns(summary.columns)  # bench.results owns the schema


def metric_directions(
    metrics: Sequence[str], measurements: pd.DataFrame | None, meta: dict
) -> dict[str, tuple[bool, str]]:
    """metric -> (higher_is_better, unit), from the tidy table, else run.json's "metrics",
    else a name-based fallback (fid/kid/... lower is better)."""
    found: dict[str, tuple[bool, str]] = {}
    if measurements is not None and {"metric", "higher_is_better"} <= set(measurements.columns):
        for name, rows in measurements.groupby("metric", sort=False):
            unit = (
                rows["unit"].dropna().astype(str).iloc[0]
                if "unit" in rows and rows["unit"].notna().any()
                else ""
            )
            found[str(name)] = (bool(rows["higher_is_better"].iloc[0]), unit)
    declared = meta.get("metrics")
    if isinstance(declared, dict):
        declared = [{"name": k, **v} if isinstance(v, dict) else {"name": k} for k, v in declared.items()]
    for item in declared if isinstance(declared, list) else []:
        if isinstance(item, dict) and "name" in item and "higher_is_better" in item:
            found.setdefault(item["name"], (bool(item["higher_is_better"]), str(item.get("unit", "") or "")))
    out = {}
    for m in metrics:
        out[m] = found.get(m, (not any(k in m.lower() for k in LOWER_IS_BETTER_FALLBACK), ""))
    return out


def metric_name(metric: str, meta: dict | None = None) -> str:
    """How tables and figures name a metric: its ``MetricInfo.label`` from run.json (e.g.
    "FID (Fashion classifier)"), else a generic name; never a bare "FID"."""
    for item in (meta or {}).get("metrics", []) if isinstance((meta or {}).get("metrics"), list) else []:
        if isinstance(item, dict) and item.get("name") == metric and item.get("label"):
            return str(item["label"])
    if metric in UNLABELLED:
        return f"{UNLABELLED[metric]} (feature network not recorded)"
    return PRETTY_NAMES.get(metric, metric.replace("_", " "))


def metric_label(metric: str, higher_is_better: bool, unit: str = "", meta: dict | None = None) -> str:
    """'FID (Fashion classifier) (lower is better)', 'PSNR vs vanilla [dB] (higher is better)'."""
    unit_part = f" [{unit}]" if unit and unit not in ("fraction",) else ""
    return f"{metric_name(metric, meta)}{unit_part} ({'higher' if higher_is_better else 'lower'} is better)"


def vanilla_latency(rows: pd.DataFrame) -> float | None:
    """The reference vanilla latency: median of latency x speedup (speedup = vanilla / latency),
    else the fastest vanilla row's latency; None if neither is known."""
    if "speedup" in rows.columns:
        v = (rows["latency_s_median"] * rows["speedup"]).replace([np.inf, -np.inf], np.nan).dropna()
        v = v[v > 0]
        if len(v):
            return float(v.median())
    van = rows[rows["accelerator"] == VANILLA]["latency_s_median"].dropna()
    return float(van.min()) if len(van) else None


def short_tag(tag: str, steps: Any = None, width: int = 20) -> str:
    """A point label: the whole config tag (or 'N=steps' for an empty tag), never cut: long
    tags wrap at commas into lines of about ``width`` characters."""
    text = tag or (f"N={int(steps)}" if steps is not None and not pd.isna(steps) else "default")
    lines = [""]
    for part in text.split(","):
        sep = "," if lines[-1] else ""
        if lines[-1] and len(lines[-1]) + len(part) + 1 > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] += sep + part
    return "\n".join(lines)


def vanilla_referenced(measurements: pd.DataFrame | None) -> set[str]:
    """Metrics measured against vanilla's own output (reference "vanilla" in the tidy table)."""
    if measurements is None or not {"metric", "reference"} <= set(measurements.columns):
        return set()
    return set(measurements.loc[measurements["reference"] == "vanilla", "metric"].astype(str))


def _column(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as floats (NaN where missing or absent)."""
    if name not in rows.columns:
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(float)


def interval_frontier(speed: Estimates, quality: Estimates, higher_is_better: bool) -> list[bool]:
    """Which points are *not* dominated when intervals are taken seriously.

    j dominates i when j is at least as fast and at least as good (point estimates) and,
    on at least one of the two axes, j's 95 % interval lies wholly on the better side of
    i's. Points whose intervals overlap on both axes are statistically tied and all stay on
    the frontier. Without intervals (NaN) this is ordinary Pareto dominance. NaN points are
    never on the frontier."""
    sign = 1.0 if higher_is_better else -1.0
    q = [stats.Estimate(sign * v, *sorted((sign * lo, sign * hi))) for v, lo, hi in zip(*quality)]
    s = [stats.Estimate(v, lo, hi) for v, lo, hi in zip(*speed)]
    ok = [math.isfinite(a.value) and math.isfinite(b.value) for a, b in zip(s, q)]
    out = []
    for i in range(len(s)):
        dominated = any(
            ok[j] and j != i and s[j].value >= s[i].value and q[j].value >= q[i].value
            and (stats.intervals_separate(s[j], s[i]) or stats.intervals_separate(q[j], q[i]))
            for j in range(len(s))
        )  # fmt: skip
        out.append(ok[i] and not dominated)
    return out


def plotted_points(run_dir: str | Path) -> pd.DataFrame:
    """Tidy table of every plotted point: metric, accelerator, config_tag, steps, latency_s,
    speedup (paired, from summary.csv) with its interval, value with its interval,
    higher_is_better, on_frontier (``interval_frontier``). Failed rows and missing values
    excluded, and so is the reference vanilla row for metrics measured against vanilla
    itself (its value is perfect by construction; the figure marks it with a line instead)."""
    summary, measurements, meta = read_run(run_dir)
    ok = summary[summary["status"].map(is_ok)].reset_index(drop=True)
    v_lat = vanilla_latency(summary)
    directions = metric_directions(quality_metrics(summary), measurements, meta)
    against_vanilla = vanilla_referenced(measurements)
    is_reference = (ok["accelerator"] == VANILLA) & (ok["config_tag"].fillna("default") == "default")
    frames = []
    for metric, (higher, _unit) in directions.items():
        keep = ~is_reference if metric in against_vanilla else pd.Series(True, index=ok.index)
        rows = ok[
            keep & np.isfinite(pd.to_numeric(ok[metric], errors="coerce")) & (ok["latency_s_median"] > 0)
        ]
        if rows.empty:
            continue
        lat = rows["latency_s_median"].to_numpy(float)
        speed = _column(rows, "speedup")
        speed = np.where(
            np.isfinite(speed), speed, v_lat / lat if v_lat else np.nan
        )  # older runs: from latency
        speed_ci = (speed, _column(rows, "speedup_ci_low"), _column(rows, "speedup_ci_high"))
        val = pd.to_numeric(rows[metric]).to_numpy(float)
        val_ci = (val, _column(rows, metric + CI_LOW), _column(rows, metric + CI_HIGH))
        frames.append(pd.DataFrame({
            "metric": metric,
            "accelerator": rows["accelerator"].to_numpy(),
            "config_tag": rows["config_tag"].to_numpy(),
            "steps": rows["steps"].to_numpy() if "steps" in rows else np.nan,
            "latency_s": lat,
            "speedup": speed,
            "speedup_low": speed_ci[1],
            "speedup_high": speed_ci[2],
            "value": val,
            "value_low": val_ci[1],
            "value_high": val_ci[2],
            "higher_is_better": higher,
            "on_frontier": interval_frontier(speed_ci, val_ci, higher),
        }))  # fmt: skip
    cols = ["metric", "accelerator", "config_tag", "steps", "latency_s", "speedup", "speedup_low", "speedup_high",
            "value", "value_low", "value_high", "higher_is_better", "on_frontier"]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


# ------------------------------------------------------------------ figures


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


# candidate label offsets (points): nearest first, right/left/up/down then diagonals
_RADII = (5, 10, 16, 24, 34, 46, 60)
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1))


def place_labels(fig, ax, points: pd.DataFrame, fontsize: float = 6) -> list:
    """Label every point with its config tag, greedily (most crowded points first would be
    optimal; nearest offset first is simple and enough here): for each point try offsets of
    growing radius in eight directions and keep the first whose box stays inside the axes and
    overlaps no marker and no label placed before; far offsets get a leader line. The layout
    is frozen first, so saving does not move the axes under the labels."""
    fig.canvas.draw()  # final layout (constrained), then freeze it
    fig.set_layout_engine("none")
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    xy = ax.transData.transform(points[["speedup", "value"]].to_numpy(float))  # display coords
    occupied = [_box(x - 4, y - 4, x + 4, y + 4) for x, y in xy]  # the markers
    labels = []
    for (_, row), (px, py) in zip(points.iterrows(), xy):
        text = short_tag(row["config_tag"], row["steps"])
        best, best_cost = None, math.inf
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                art = _annotation(ax, text, row, radius * dx / math.hypot(dx, dy), radius * dy / math.hypot(dx, dy),
                                  fontsize, leader=radius >= 16)  # fmt: skip
                box = art.get_window_extent(renderer)
                cost = _overlap(box, occupied) + (0 if _contains(inside, box) else 1e9)
                if cost < best_cost:
                    if best is not None:
                        best.remove()
                    best, best_cost, best_box = art, cost, box
                else:
                    art.remove()
                if best_cost == 0:
                    break
            if best_cost == 0:
                break
        occupied.append(best_box)
        labels.append(best)
    return labels


def _annotation(ax, text: str, row: pd.Series, dx: float, dy: float, fontsize: float, leader: bool):
    ha = "left" if dx > 0.5 else "right" if dx < -0.5 else "center"
    va = "bottom" if dy > 0.5 else "top" if dy < -0.5 else "center"
    leader_line = {"arrowstyle": "-", "color": "0.7", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
    art = ax.annotate(
        text,
        (row["speedup"], row["value"]),
        xytext=(dx, dy),
        textcoords="offset points",
        fontsize=fontsize,
        color="dimgray",
        bbox={
            "boxstyle": "square,pad=0.15",
            "fc": "white",
            "ec": "none",
            "alpha": 0.75,
        },  # readable over lines
        ha=ha,
        va=va,
        annotation_clip=False,
        arrowprops=leader_line if leader else None,
    )
    art.set_in_layout(False)
    return art


def _box(x0: float, y0: float, x1: float, y1: float):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])


def _overlap(box, others) -> float:
    """Total area of ``box`` shared with the boxes in ``others`` (display units^2)."""
    total = 0.0
    for o in others:
        w = min(box.x1, o.x1) - max(box.x0, o.x0)
        h = min(box.y1, o.y1) - max(box.y0, o.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def _contains(outer, box) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one Pareto figure per quality metric (PNG + PDF) and pareto_points.csv into
    ``out_dir`` (default ``<run_dir>/plots``); returns the written paths."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    points = plotted_points(run_dir)
    written: list[Path] = []
    for metric in points["metric"].unique():
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


# ------------------------------------------------------------------ Markdown report


def _sig(value: Any, digits: int = 3) -> str:
    """3 significant digits; '–' for missing."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.0f} %"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def saving_realised(speedup: float, flop_speedup: float) -> float:
    """Share of the FLOP saving the wall clock realises (``bench.stats.saving_realised``)."""
    return stats.saving_realised(speedup, flop_speedup)


def _with_interval(row: pd.Series, column: str, suffix: str = "") -> str:
    """'2.38× [2.31, 2.45]': the value and, when summary.csv has it, its 95 % interval."""
    value = row.get(column)
    text = _sig(value) + (suffix if pd.notna(value) else "")
    low, high = row.get(f"{column}{CI_LOW}"), row.get(f"{column}{CI_HIGH}")
    if column == "speedup":
        low, high = row.get("speedup_ci_low"), row.get("speedup_ci_high")
    if pd.notna(value) and low is not None and high is not None and pd.notna(low) and pd.notna(high):
        text += f" [{_sig(low)}, {_sig(high)}]"
    return text


def report_markdown(run_dir: str | Path) -> str:
    """The run's summary as Markdown: a header from run.json and one table row per
    configuration (failed rows included, with their error); speed-ups and quality metrics
    with their 95 % intervals in brackets, and the timing flag (ok / unstable)."""
    summary, measurements, meta = read_run(run_dir)
    metrics = quality_metrics(summary)
    directions = metric_directions(metrics, measurements, meta)
    lines = [f"# Run {meta.get('run_id', Path(run_dir).name)}", ""]
    for key, value in meta.items():
        if key != "run_id" and isinstance(value, (str, int, float, bool)):
            lines.append(f"- **{key}**: {value}")
    if len(lines) > 2:
        lines.append("")
    head = ["accelerator", "config", "steps", "latency ms/img", "speedup [95 % CI]", "FLOP speedup",
            "saving realised", "full forwards"]  # fmt: skip
    head += [f"{metric_name(m, meta)} {'↑' if directions[m][0] else '↓'}" for m in metrics] + [
        "timing",
        "status",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        status = "ok" if is_ok(r["status"]) else str(r["status"])
        error = r.get("error")
        if not is_ok(r["status"]) and isinstance(error, str) and error.strip():
            status += f": {error.strip()[:120]}"
        steps = r.get("steps")
        timing = r.get("timing")
        cells = [
            r["accelerator"],
            r["config_tag"] or "(default)",
            "–" if steps is None or pd.isna(steps) else int(steps),
            _sig(float(r["latency_s_median"]) * 1000 if pd.notna(r["latency_s_median"]) else None),
            _with_interval(r, "speedup", "×"),
            _sig(r.get("flop_speedup")) + ("×" if pd.notna(r.get("flop_speedup")) else ""),
            _percent(
                saving_realised(float(r.get("speedup", math.nan)), float(r.get("flop_speedup", math.nan)))
            ),
            _sig(r.get("full_forwards")),
            *[_with_interval(r, m) for m in metrics],
            timing if isinstance(timing, str) and timing else "–",
            status,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    unstable = [
        f"{r['accelerator']} {r['config_tag']}"
        for _, r in summary.iterrows()
        if r.get("timing") == "unstable"
    ]
    if unstable:
        lines += ["", f"Timing unstable for: {', '.join(unstable)} (see `timing_note` in summary.csv)."]
    return "\n".join(lines) + "\n"
