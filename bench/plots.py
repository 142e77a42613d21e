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

from bench.results import SUMMARY_COLUMNS

OK_STATUSES = {"ok", ""}
LOWER_IS_BETTER_FALLBACK = ("fid", "kid", "lpips", "mse", "error")  # only when no table says the direction
PRETTY_NAMES = {
    "fid": "FID", "kid": "KID", "inception_score": "Inception score", "class_accuracy": "class accuracy",
    "psnr_vs_vanilla": "PSNR vs vanilla", "ssim_vs_vanilla": "SSIM vs vanilla",
    "token_agreement": "token agreement", "feature_cosine": "feature cosine",
}  # fmt: skip
VANILLA = "vanilla"


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
    """The quality-metric columns of summary.csv (everything beyond the fixed columns)."""
    return [c for c in summary.columns if c not in SUMMARY_COLUMNS]  # bench.results owns the schema


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


def metric_label(metric: str, higher_is_better: bool, unit: str = "") -> str:
    """'FID (lower is better)', 'PSNR vs vanilla [dB] (higher is better)'."""
    name = PRETTY_NAMES.get(metric, metric.replace("_", " "))
    unit_part = f" [{unit}]" if unit and unit not in ("fraction",) else ""
    return f"{name}{unit_part} ({'higher' if higher_is_better else 'lower'} is better)"


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


def short_tag(tag: str, steps: Any = None, width: int = 22) -> str:
    """A point label: the config tag (or 'N=steps' for an empty tag), cut to ``width``."""
    text = tag or (f"N={int(steps)}" if steps is not None and not pd.isna(steps) else "default")
    return text if len(text) <= width else text[: width - 1] + "…"


def vanilla_referenced(measurements: pd.DataFrame | None) -> set[str]:
    """Metrics measured against vanilla's own output (reference "vanilla" in the tidy table)."""
    if measurements is None or not {"metric", "reference"} <= set(measurements.columns):
        return set()
    return set(measurements.loc[measurements["reference"] == "vanilla", "metric"].astype(str))


def plotted_points(run_dir: str | Path) -> pd.DataFrame:
    """Tidy table of every plotted point: metric, accelerator, config_tag, steps, latency_s,
    speedup, value, higher_is_better, on_frontier. Failed rows and missing values excluded,
    and so is the reference vanilla row for metrics measured against vanilla itself (its
    value is perfect by construction; the figure marks it with a vertical line instead)."""
    summary, measurements, meta = read_run(run_dir)
    ok = summary[summary["status"].map(is_ok)].reset_index(drop=True)
    v_lat = vanilla_latency(summary)
    directions = metric_directions(quality_metrics(summary), measurements, meta)
    against_vanilla = vanilla_referenced(measurements)
    is_reference = (ok["accelerator"] == VANILLA) & (ok["config_tag"].fillna("default") == "default")
    frames = []
    for metric, (higher, _unit) in directions.items():
        keep = ~is_reference if metric in against_vanilla else pd.Series(True, index=ok.index)
        rows = ok[keep & np.isfinite(pd.to_numeric(ok[metric], errors="coerce")) & (ok["latency_s_median"] > 0)]
        if rows.empty:
            continue
        lat = rows["latency_s_median"].to_numpy(float)
        val = pd.to_numeric(rows[metric]).to_numpy(float)
        front = set(pareto_frontier(lat, val, higher))
        frames.append(pd.DataFrame({
            "metric": metric,
            "accelerator": rows["accelerator"].to_numpy(),
            "config_tag": rows["config_tag"].to_numpy(),
            "steps": rows["steps"].to_numpy() if "steps" in rows else np.nan,
            "latency_s": lat,
            "speedup": v_lat / lat if v_lat else np.nan,
            "value": val,
            "higher_is_better": higher,
            "on_frontier": [i in front for i in range(len(rows))],
        }))  # fmt: skip
    cols = [
        "metric",
        "accelerator",
        "config_tag",
        "steps",
        "latency_s",
        "speedup",
        "value",
        "higher_is_better",
        "on_frontier",
    ]
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


def _draw_metric(fig, points: pd.DataFrame, label: str, v_lat: float | None, title: str) -> None:
    """One Pareto panel on ``fig``: lines per accelerator, vanilla stars, dashed frontier."""
    ax = fig.add_subplot(1, 1, 1)
    accelerators = sorted(points["accelerator"].unique(), key=lambda a: (a != VANILLA, a))
    colors = {a: f"C{i % 10}" for i, a in enumerate(a for a in accelerators if a != VANILLA)}
    for acc in accelerators:
        rows = points[points["accelerator"] == acc].sort_values("latency_s")
        if acc == VANILLA:
            ax.plot(rows["latency_s"], rows["value"], "-", color="black", lw=1, alpha=0.6, zorder=3)
            ax.plot(
                rows["latency_s"],
                rows["value"],
                "*",
                color="gold",
                mec="black",
                ms=16,
                label=VANILLA,
                zorder=5,
            )
        else:
            # the line joins the accelerator's own Pareto-optimal configurations; its dominated
            # ones (e.g. an ablation) are hollow markers, so the line does not zig-zag
            higher = bool(rows["higher_is_better"].iloc[0])
            own = rows.iloc[pareto_frontier(rows["latency_s"].to_numpy(float), rows["value"].to_numpy(float), higher)]
            ax.plot(own["latency_s"], own["value"], "o-", color=colors[acc], ms=5, lw=1.5, label=acc, zorder=4)
            rest = rows.drop(own.index)
            ax.plot(rest["latency_s"], rest["value"], "o", mfc="white", color=colors[acc], ms=5, zorder=4)
        for _, r in rows.iterrows():
            ax.annotate(short_tag(r["config_tag"], r["steps"]), (r["latency_s"], r["value"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=6, color="dimgray")  # fmt: skip
    front = points[points["on_frontier"]].sort_values("latency_s")
    if len(front):
        ax.step(
            front["latency_s"],
            front["value"],
            where="post",
            ls="--",
            color="gray",
            lw=1.2,
            label="Pareto frontier",
            zorder=2,
        )
    reference_shown = ((points["accelerator"] == VANILLA) & (points["config_tag"].fillna("default") == "default")).any()
    if v_lat and not reference_shown:  # a metric against vanilla: vanilla is the reference, not a point
        ax.axvline(v_lat, color="black", ls=":", lw=1.2, label="vanilla (the reference)", zorder=1)
    ax.set_xscale("log")
    ax.margins(x=0.1, y=0.08)  # room for the point labels
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("latency per image [s] (log scale)")
    ax.set_ylabel(label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    if v_lat:
        top = ax.secondary_xaxis(
            "top", functions=(lambda x: v_lat / np.maximum(x, 1e-30), lambda s: v_lat / np.maximum(s, 1e-30))
        )
        _plain_log_ticks(top.xaxis, suffix="×")
        top.set_xlabel("speedup vs vanilla")


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one Pareto figure per quality metric (PNG + PDF) and pareto_points.csv into
    ``out_dir`` (default ``<run_dir>/plots``); returns the written paths."""
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, measurements, meta = read_run(run_dir)
    points = plotted_points(run_dir)
    directions = metric_directions(quality_metrics(summary), measurements, meta)
    v_lat = vanilla_latency(summary)
    model = meta.get("base_model") or meta.get("model") or ""
    if isinstance(model, dict):  # run.json: {"model": {"spec": ..., "name": ..., ...}}
        model = str(model.get("name") or model.get("spec") or "")
    written: list[Path] = []
    for metric in points["metric"].unique():
        higher, unit = directions[metric]
        fig = Figure(figsize=(6.4, 4.6), layout="constrained")
        title = f"{model + ': ' if model else ''}{PRETTY_NAMES.get(metric, metric)} vs latency"
        _draw_metric(
            fig, points[points["metric"] == metric], metric_label(metric, higher, unit), v_lat, title
        )
        for ext in ("png", "pdf"):
            path = out_dir / f"pareto_{metric}.{ext}"
            fig.savefig(path, dpi=150)
            written.append(path)
    csv = out_dir / "pareto_points.csv"
    points.to_csv(csv, index=False)
    written.append(csv)
    return written


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
    """Share of the FLOP saving the wall clock realises: (1 - 1/speedup) / (1 - 1/flop_speedup).

    1 means latency fell exactly as FLOPs did; NaN when the configuration saves no FLOPs."""
    if not (flop_speedup > 1 and speedup > 0):
        return math.nan
    return (1 - 1 / speedup) / (1 - 1 / flop_speedup)


def _metric_errors(cell: Any) -> dict[str, str]:
    """The summary's ``metric_errors`` JSON ({} when empty or unreadable)."""
    if not isinstance(cell, str) or not cell.strip():
        return {}
    try:
        out = json.loads(cell)
    except ValueError:
        return {"metrics": cell}
    return {str(k): str(v) for k, v in out.items()} if isinstance(out, dict) else {"metrics": cell}


def report_markdown(run_dir: str | Path) -> str:
    """The run's summary as Markdown: a header from run.json and one table row per
    configuration (failed rows included, with their error)."""
    summary, measurements, meta = read_run(run_dir)
    metrics = quality_metrics(summary)
    directions = metric_directions(metrics, measurements, meta)
    lines = [f"# Run {meta.get('run_id', Path(run_dir).name)}", ""]
    for key, value in meta.items():
        if key != "run_id" and isinstance(value, (str, int, float, bool)):
            lines.append(f"- **{key}**: {value}")
    if len(lines) > 2:
        lines.append("")
    head = ["accelerator", "config", "steps", "latency ms/img", "speedup", "FLOP speedup", "saving realised",
            "full forwards"]  # fmt: skip
    head += [f"{PRETTY_NAMES.get(m, m)} {'↑' if directions[m][0] else '↓'}" for m in metrics] + ["status"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        status = "ok" if is_ok(r["status"]) else str(r["status"])
        error = r.get("error")
        if not is_ok(r["status"]) and isinstance(error, str) and error.strip():
            status += f": {error.strip()[:120]}"
        missing = _metric_errors(r.get("metric_errors"))  # a metric without value shows why, not "–"
        if missing:
            status += ": " + "; ".join(f"{k}: {v}" for k, v in missing.items())[:160]
        steps = r.get("steps")
        cells = [
            r["accelerator"],
            r["config_tag"] or "(default)",
            "–" if steps is None or pd.isna(steps) else int(steps),
            _sig(float(r["latency_s_median"]) * 1000 if pd.notna(r["latency_s_median"]) else None),
            _sig(r.get("speedup")) + ("×" if pd.notna(r.get("speedup")) else ""),
            _sig(r.get("flop_speedup")) + ("×" if pd.notna(r.get("flop_speedup")) else ""),
            _percent(saving_realised(float(r.get("speedup", math.nan)), float(r.get("flop_speedup", math.nan)))),
            _sig(r.get("full_forwards")),
            *["failed" if m in missing else _sig(r[m]) for m in metrics],
            status,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
