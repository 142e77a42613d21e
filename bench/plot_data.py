"""What the figures and the report of one run show, from its result files only.

Reads ``<run_dir>/summary.csv`` (one row per accelerator configuration), the tidy
``measurements.parquet`` (or ``measurements.csv``) for each metric's direction and unit,
and ``run.json`` for the header and each metric's label (recorded by the runner from the
metric's spec). Pure computations: the Pareto frontier with and without intervals, and the
table of plotted points. Nothing here imports torch, a model or an accelerator.
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


def declared_metrics(meta: dict | None) -> dict[str, dict]:
    """run.json's "metrics" by name: what the runner recorded from each metric's spec
    (``MetricInfo``: unit, higher_is_better, reference, label). Older runs' {name: {...}}
    form is read too; {} when run.json has none."""
    declared = (meta or {}).get("metrics")
    if isinstance(declared, dict):
        declared = [{"name": k, **v} if isinstance(v, dict) else {"name": k} for k, v in declared.items()]
    if not isinstance(declared, list):
        return {}
    return {str(item["name"]): item for item in declared if isinstance(item, dict) and "name" in item}


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
    for name, item in declared_metrics(meta).items():
        if "higher_is_better" in item:
            found.setdefault(name, (bool(item["higher_is_better"]), str(item.get("unit", "") or "")))
    out = {}
    for m in metrics:
        out[m] = found.get(m, (not any(k in m.lower() for k in LOWER_IS_BETTER_FALLBACK), ""))
    return out


def metric_name(metric: str, meta: dict | None = None) -> str:
    """How tables and figures name a metric: the label its spec declares (``MetricInfo.label``,
    e.g. "FID (Fashion classifier)"), as the runner recorded it in run.json; for runs that
    recorded none, the metric's name in words (``bench.protocol.default_metric_label``'s rule)."""
    label = declared_metrics(meta).get(metric, {}).get("label")
    return str(label) if label else metric.replace("_", " ")


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
