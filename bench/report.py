"""A run's summary as a Markdown table, from its result files only (``bench.plot_data``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench import stats
from bench.plot_data import is_ok, metric_directions, metric_name, quality_metrics, read_run
from bench.results import CI_HIGH, CI_LOW


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
        missing = _metric_errors(r.get("metric_errors"))  # a metric without value shows why, not "–"
        if missing:
            status += ": " + "; ".join(f"{k}: {v}" for k, v in missing.items())[:160]
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
            *["failed" if m in missing else _with_interval(r, m) for m in metrics],
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
