"""bench.plots: Pareto frontier, figures and Markdown report from a hand-made results folder."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from bench.plots import metric_label, pareto_frontier, plot_run, plotted_points, report_markdown
from bench.protocol import MetricInfo


def test_frontier_higher_is_better():
    latency = [1.0, 2.0, 3.0, 4.0, 2.5]
    quality = [0.5, 0.7, 0.6, 0.9, 0.7]  # #2 and #4 are dominated by #1
    assert pareto_frontier(latency, quality, higher_is_better=True) == [0, 1, 3]


def test_frontier_lower_is_better_and_nan_and_ties():
    latency = [4.0, 3.0, 2.0, 1.0, 1.0, 0.5, 2.0]
    fid = [10.0, 40.0, 30.0, 50.0, 50.0, float("nan"), 30.0]  # 4 duplicates 3, 6 duplicates 2, 5 is NaN
    assert pareto_frontier(latency, fid, higher_is_better=False) == [3, 2, 0]
    assert pareto_frontier([], [], True) == []
    with pytest.raises(ValueError, match="lengths differ"):
        pareto_frontier([1.0], [1.0, 2.0], True)


def test_metric_label_states_direction_and_names_the_feature_network():
    meta = {"metrics": [{"name": "fid", "label": "FID (Fashion classifier)", "higher_is_better": False}]}
    assert metric_label("fid", False, meta=meta) == "FID (Fashion classifier) (lower is better)"
    # the label comes from the metric's spec, as the runner records it in run.json (no table in bench.plots)
    from bench.fidelity_metrics import PSNRVsVanilla

    recorded = {"metrics": [dataclasses.asdict(PSNRVsVanilla.info)]}
    assert metric_label("psnr_vs_vanilla", True, "dB", recorded) == "PSNR vs vanilla [dB] (higher is better)"
    # runs that recorded no label (older run folders): the metric's name in words
    assert metric_label("psnr_vs_vanilla", True, "dB") == "psnr vs vanilla [dB] (higher is better)"
    assert (
        metric_label("fid", False, meta={"metrics": [{"name": "fid", "label": ""}]})
        == "fid (lower is better)"
    )


def test_spec_label_is_recorded_and_named_on_the_axis(tmp_path):
    """A metric's label comes from its spec: MetricInfo's label, or one derived from its name,
    is what the runner writes into run.json and what the figure's y axis and the report say."""
    from bench.plots import pareto_figure

    assert MetricInfo("token_agreement", "", True, "vanilla").label == "token agreement"  # derived
    custom = MetricInfo("class_accuracy", "fraction", True, "condition", label="accuracy (my judge)")
    run = make_run(tmp_path)
    meta = json.loads((run / "run.json").read_text())
    meta["metrics"].append(dataclasses.asdict(custom))  # as bench.runner records each metric's spec
    (run / "run.json").write_text(json.dumps(meta))
    fig, _labels = pareto_figure(run, "class_accuracy")
    assert fig.axes[0].get_ylabel() == "accuracy (my judge) (higher is better)"
    assert "accuracy (my judge) vs speed-up" in fig.axes[0].get_title()
    assert "accuracy (my judge) ↑" in report_markdown(run)


ROWS = [  # accelerator, config_tag, steps, latency, fid, class_accuracy, status, error
    ("vanilla", "", 16, 1.0, 10.0, 0.9, "ok", ""),
    ("few-step", "steps=8", 8, 0.5, 15.0, 0.85, "ok", ""),
    ("few-step", "steps=4", 4, 0.25, 30.0, 0.7, "ok", ""),
    ("shortcut", "budget=6", 16, 0.3, 12.0, 0.875, "ok", ""),
    ("shortcut", "budget=3", 16, 0.2, 20.0, 0.8, "ok", ""),
    ("shortcut", "budget=1", 16, 0.1, 1.0, 0.99, "failed", "boom | bad"),  # would dominate everything
]


def make_run(tmp_path, tidy_format="parquet"):
    run = tmp_path / "run1"
    run.mkdir()
    summary = pd.DataFrame(
        [
            {
                "accelerator": a, "config_tag": tag, "steps": n, "latency_s_median": lat, "latency_s_iqr": lat / 10,
                "speedup": 1.0 / lat, "flops_per_image": 1e9 * lat, "flop_speedup": 1.0 / lat, "full_forwards": n,
                "partial_forwards": 0, "partial_coverage": 0.0, "other_calls": 0, "peak_mem_mb": 10.0,
                "decode_s_per_image": 0.001, "status": status, "error": err, "fid": fid, "class_accuracy": acc,
            }
            for a, tag, n, lat, fid, acc, status, err in ROWS
        ]
    )  # fmt: skip
    summary.to_csv(run / "summary.csv", index=False)
    tidy = []
    for a, tag, n, _lat, fid, acc, status, _ in ROWS:
        if status != "ok":
            continue
        for metric, value, higher, unit, ref in (
            ("fid", fid, False, "", "data"),
            ("class_accuracy", acc, True, "fraction", "condition"),
        ):
            tidy.append({"run_id": "run1", "base_model": "fashion", "accelerator": a, "config_tag": tag, "steps": n, "seed": 0,
                             "replicate": 0, "metric": metric, "value": value, "unit": unit, "higher_is_better": higher, "reference": ref})  # fmt: skip
    tidy = pd.DataFrame(tidy)
    if tidy_format == "parquet":
        tidy.to_parquet(run / "measurements.parquet")
    else:
        tidy.to_csv(run / "measurements.csv", index=False)
    labels = [{"name": "fid", "label": "FID (Fashion classifier)", "higher_is_better": False, "unit": ""}]
    (run / "run.json").write_text(
        json.dumps({"run_id": "run1", "base_model": "fashion", "n_images": 500, "metrics": labels})
    )
    return run


def test_plot_run_writes_figures_and_points(tmp_path):
    run = make_run(tmp_path)
    written = plot_run(run)
    names = {p.name for p in written}
    assert {
        "pareto_fid.png",
        "pareto_fid.pdf",
        "pareto_class_accuracy.png",
        "pareto_class_accuracy.pdf",
        "pareto_points.csv",
    } <= names
    for p in written:
        assert p.is_file() and p.stat().st_size > 0
    assert (run / "plots" / "pareto_fid.png").read_bytes()[:4] == b"\x89PNG"
    points = pd.read_csv(run / "plots" / "pareto_points.csv", keep_default_na=False)
    assert "budget=1" not in set(points["config_tag"])  # failed row not plotted
    fid = points[points["metric"] == "fid"]
    assert len(fid) == 5
    frontier = set(fid[fid["on_frontier"].astype(str) == "True"]["config_tag"])
    assert frontier == {"budget=3", "budget=6", ""}  # (0.2, 20), (0.3, 12), vanilla (1.0, 10)
    acc = points[points["metric"] == "class_accuracy"]
    assert set(acc[acc["on_frontier"].astype(str) == "True"]["config_tag"]) == {"budget=3", "budget=6", ""}
    # secondary axis data: speedup vs vanilla = vanilla latency / latency
    assert fid.set_index("config_tag").loc["steps=4", "speedup"] == pytest.approx(4.0)


def test_directions_from_csv_measurements(tmp_path):
    run = make_run(tmp_path, tidy_format="csv")
    points = plotted_points(run)
    assert not points[points["metric"] == "fid"]["higher_is_better"].any()
    assert points[points["metric"] == "class_accuracy"]["higher_is_better"].all()


def test_report_markdown(tmp_path):
    run = make_run(tmp_path)
    text = report_markdown(run)
    lines = text.splitlines()
    assert lines[0] == "# Run run1"
    header = next(line for line in lines if line.startswith("| accelerator"))
    assert (
        "FID (Fashion classifier) ↓" in header and "class accuracy ↑" in header and "latency ms/img" in header
    )
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| accelerator")]
    assert len(rows) == len(ROWS)  # failed rows are reported
    vanilla = next(r for r in rows if r.startswith("| vanilla"))
    assert "(default)" in vanilla and "| 1e+03 |" in vanilla and "| 1× |" in vanilla
    budget6 = next(r for r in rows if "budget=6" in r)
    assert "| 300 |" in budget6 and "| 3.33× |" in budget6 and "| 12 |" in budget6 and "| 0.875 |" in budget6
    failed = next(r for r in rows if "budget=1" in r)
    assert "failed: boom \\| bad" in failed


def test_missing_summary_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.csv"):
        plot_run(tmp_path)


def test_all_failed_writes_only_points(tmp_path):
    run = make_run(tmp_path)
    summary = pd.read_csv(run / "summary.csv")
    summary["status"] = "failed"
    summary.to_csv(run / "summary.csv", index=False)
    written = plot_run(run)
    assert [p.name for p in written] == ["pareto_points.csv"]
    assert math.isclose(len(pd.read_csv(written[0])), 0)


def test_saving_realised():
    from bench.plots import saving_realised

    assert saving_realised(2.0, 2.0) == 1.0  # latency fell exactly as FLOPs did
    assert abs(saving_realised(1.5, 2.0) - (1 / 3) / 0.5) < 1e-12
    assert math.isnan(saving_realised(1.0, 1.0))  # no FLOP saving: undefined


def test_reference_vanilla_not_plotted_for_metrics_against_vanilla(tmp_path):
    """PSNR of vanilla against itself is perfect by construction: it must not squash the axis."""
    from bench.plots import plotted_points

    run = tmp_path / "run"
    run.mkdir()
    summary = pd.DataFrame({
        "accelerator": ["vanilla", "few-step"], "config_tag": ["default", "steps=4"], "steps": [16, 4],
        "latency_s_median": [0.1, 0.025], "speedup": [1.0, 4.0], "status": ["ok", "ok"],
        "psnr_vs_vanilla": [100.0, 15.0], "fid": [10.0, 12.0],
    })  # fmt: skip
    summary.to_csv(run / "summary.csv", index=False)
    rows = []
    for metric, ref, hib in (("psnr_vs_vanilla", "vanilla", True), ("fid", "data", False)):
        for acc, tag in (("vanilla", "default"), ("few-step", "steps=4")):
            rows.append({"run_id": "run", "accelerator": acc, "config_tag": tag, "metric": metric, "value": 1.0,
                         "unit": "", "higher_is_better": hib, "reference": ref})  # fmt: skip
    pd.DataFrame(rows).to_csv(run / "measurements.csv", index=False)
    pd.DataFrame(rows).to_parquet(run / "measurements.parquet")
    (run / "run.json").write_text("{}")
    points = plotted_points(run)
    assert set(points[points.metric == "psnr_vs_vanilla"].accelerator) == {"few-step"}
    assert set(points[points.metric == "fid"].accelerator) == {"vanilla", "few-step"}


def test_frontier_needs_the_intervals_to_separate():
    """b is faster and better than a by point estimates; it dominates a only when, on one axis,
    its interval clears a's."""
    from bench.plots import interval_frontier

    speed = ([1.0, 1.1], [0.9, 1.0], [1.1, 1.2])  # (values, lows, highs): overlapping
    tied = ([10.0, 10.5], [9.0, 9.5], [11.0, 11.5])  # overlapping
    clear = ([10.0, 12.5], [9.0, 11.5], [11.0, 13.5])  # b's interval wholly above a's
    assert interval_frontier(speed, tied, higher_is_better=True) == [True, True]
    assert interval_frontier(speed, clear, higher_is_better=True) == [False, True]
    assert interval_frontier(speed, clear, higher_is_better=False) == [True, True]  # b worse: no dominance
    no_ci = ([1.0, 1.1], [float("nan")] * 2, [float("nan")] * 2)
    assert interval_frontier(no_ci, ([10.0, 10.5], [float("nan")] * 2, [float("nan")] * 2), True) == [
        False,
        True,
    ]


def test_report_prints_intervals_and_timing(tmp_path):
    run = make_run(tmp_path)
    summary = pd.read_csv(run / "summary.csv")
    summary["speedup_ci_low"], summary["speedup_ci_high"] = summary["speedup"] * 0.9, summary["speedup"] * 1.1
    summary["fid_ci_low"], summary["fid_ci_high"] = summary["fid"] - 1, summary["fid"] + 1
    summary["timing"] = ["ok", "ok", "ok", "unstable", "ok", ""]
    summary.to_csv(run / "summary.csv", index=False)
    text = report_markdown(run)
    budget6 = next(line for line in text.splitlines() if "budget=6" in line)
    assert "| 3.33× [3, 3.67] |" in budget6 and "| 12 [11, 13] |" in budget6 and "| unstable |" in budget6
    assert "fid_ci_low" not in text  # interval columns are not metrics of their own
    assert "Timing unstable for: shortcut budget=6" in text


@pytest.mark.parametrize(
    "run, metrics",
    [
        ("reference-cpu", ("psnr_vs_vanilla", "fid")),
        ("reference-cpu-fashion-t2i", ("clip_score", "token_agreement")),
    ],
)
def test_labels_are_whole_apart_and_inside_the_axes(run, metrics):
    """On the committed reference runs (17 and 18 configurations): every point's label is its
    whole tag (the no-cross and narrow variants are told apart from the plain shortcut), no two
    labels overlap, no label covers another point's marker or leaves the axes, and no leader
    line runs through another label."""
    from pathlib import Path

    from bench.label_placement import _crosses, text_box
    from bench.plots import pareto_figure

    folder = Path(__file__).resolve().parent.parent / "results" / run
    for metric in metrics:
        fig, labels = pareto_figure(folder, metric)
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        texts = [t.get_text().replace("\n", "") for t in labels]
        assert "steps=16,budget=6,variant=nocross" in texts and "steps=16,budget=6" in texts
        boxes = [text_box(t, renderer) for t in labels]  # the text, not its leader
        points = [ax.transData.transform(t.xy) for t in labels]
        axes = ax.get_window_extent(renderer)
        for i, a in enumerate(boxes):
            assert axes.x0 <= a.x0 and a.x1 <= axes.x1 and axes.y0 <= a.y0 and a.y1 <= axes.y1, texts[i]
            for j, b in enumerate(boxes):
                if j != i:
                    assert not a.overlaps(b), (texts[i], texts[j])
                    assert not a.contains(*points[j]), (texts[i], "covers the marker of", texts[j])
                    if labels[i].arrow_patch is not None:
                        centre = [(a.x0 + a.x1) / 2, (a.y0 + a.y1) / 2]
                        assert not _crosses(points[i], centre, b), (texts[i], "leader crosses", texts[j])
        if run.endswith("t2i"):
            assert "steps=16,budget=6,variant=narrow" in texts


class _LabelledMetric:
    """A test metric whose spec declares its own display label."""

    info = MetricInfo("brightness", "", True, "data", label="brightness (test probe)")

    def compute(self, generated, ctx) -> float:
        return float(generated.images.mean())


def test_runner_records_the_spec_label_and_the_figure_shows_it(manager, tmp_path):
    """End to end: the label a metric's spec declares reaches run.json through the runner,
    and the Pareto figure (a pure function of the result files) names the y axis with it."""
    from conftest import TINY_MODEL

    from bench.hookspecs import hookimpl
    from bench.plots import pareto_figure
    from bench.runner import Sweep, run_sweep
    from bench.specs import MetricSpec

    class Plugin:
        @hookimpl
        def register_metrics(self, register):
            register(
                MetricSpec(info=_LabelledMetric.info, factory=lambda model: _LabelledMetric(), default=False)
            )

    manager.register(Plugin())
    sweep = Sweep(model=TINY_MODEL, accelerators=["few-step:steps=4"], images=2, batch_size=2, replicates=1,
                  warmup=0, out=str(tmp_path), name="run", device="cpu", metrics=["brightness"])  # fmt: skip
    run_dir = run_sweep(sweep, manager=manager, command=["test"], progress=False)
    recorded = {m["name"]: m for m in json.loads((run_dir / "run.json").read_text())["metrics"]}
    assert recorded["brightness"]["label"] == "brightness (test probe)"
    fig, _labels = pareto_figure(run_dir, "brightness")
    assert fig.axes[0].get_ylabel() == "brightness (test probe) (higher is better)"
