"""The sweep runner on the tiny MaskGIT: result files, pairing by seed, failures, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bench_test_plugin
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL

from bench.config import UnknownNameError
from bench.results import RunStore
from bench.runner import Sweep, SweepError, default_sweep_specs, run_sweep, spec_string

METRICS = ["same_tokens", "mean_pixel", "needs_data"]


def tiny_sweep(tmp_path: Path, accelerators: list[str], **overrides) -> Sweep:
    """4 images in 2 batches of 2, 3 timing replicates (so one extra timed pass)."""
    settings = {
        "model": TINY_MODEL,
        "accelerators": accelerators,
        "images": 4,
        "batch_size": 2,
        "replicates": 3,
        "warmup": 1,
        "out": str(tmp_path),
        "name": "run",
        "device": "cpu",
        "metrics": METRICS,
    }
    settings.update(overrides)
    return Sweep(**settings)


def keys(summary: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(summary["accelerator"], summary["config_tag"]))


def assert_each_measurement_once(store: RunStore) -> None:
    m = store.measurements()
    dup = m.duplicated(["accelerator", "config_tag", "metric", "replicate"])
    assert not dup.any(), m[dup]
    assert len(pd.read_csv(store.measurements_csv)) == len(m)  # the CSV mirrors the parquet file
    finished = set(store.finished())
    assert set(zip(m["accelerator"], m["config_tag"])) <= finished


def test_sweep_writes_results_pairs_seeds_and_survives_a_failure(manager, tmp_path):
    run_dir = run_sweep(
        tiny_sweep(tmp_path, ["few-step:steps=6", "boom", "few-step:steps=3"]),
        manager=manager,
        command=["test"],
        progress=False,
    )
    store = RunStore(run_dir)
    for name in ("measurements.parquet", "measurements.csv", "summary.csv", "run.json", "vanilla_outputs.pt"):
        assert (run_dir / name).exists(), name

    s = store.summary().set_index(["accelerator", "config_tag"])
    # vanilla first (added although not asked for), then the order given
    assert keys(store.summary()) == [
        ("vanilla", "default"),
        ("few-step", "steps=6"),
        ("boom", "default"),
        ("few-step", "steps=3"),
    ]
    van, same, boom, fast = (s.loc[k] for k in s.index)
    assert van.status == same.status == fast.status == "ok"
    assert van.speedup == 1.0 and van.flop_speedup == 1.0 and van.steps == 6 and van.full_forwards == 6
    # few-step at vanilla's N is vanilla: same seeds and conditions -> the very same tokens
    assert same.same_tokens == 1.0 and same.flops_per_image == van.flops_per_image
    assert fast.full_forwards == 3 and fast.flop_speedup == pytest.approx(2.0)
    assert van.latency_s_median > 0 and van.latency_s_iqr >= 0 and van.decode_s_per_image > 0
    assert van.peak_mem_mb > 0 and van.images == 4
    # the failing configuration is recorded and the sweep went on
    assert boom.status == "failed" and "RuntimeError: boom at step 1" in boom.error
    assert "bench_test_plugin.py" in boom.error
    assert "boom at step 1" in (run_dir / "errors.log").read_text()
    assert "needs_data" not in s.columns and "mean_pixel" in s.columns

    m = store.measurements()
    lat = m[(m.accelerator == "vanilla") & (m.metric == "latency_s_per_image")]
    assert list(lat.replicate) == [0, 1, 2] and list(lat.seed) == [0, 1, 0]  # 2 batches + 1 extra pass
    agree = m[m.metric == "same_tokens"].iloc[0]
    assert agree.reference == "vanilla" and bool(agree.higher_is_better) and agree.unit == "fraction"
    assert not (m.accelerator == "boom").any()
    assert_each_measurement_once(store)

    info = json.loads((run_dir / "run.json").read_text())
    assert info["skipped_metrics"] == {"needs_data": "needs real data the test model does not have"}
    assert info["resolved"]["reference_steps"] == 6 and info["base_model"]["name"] == "maskgit"
    assert "torch" in info["environment"]["versions"] and info["environment"]["cpu"]
    assert "git_hash" in info["environment"] and info["invocations"][0]["command"] == "test"
    # the runner leaves glibc's malloc at its defaults (only shortcut overhead / cost keep freed
    # memory); the environment says which was used
    assert info["environment"]["malloc_keeps_freed_memory"] is False
    assert info["finished"]


def test_rerun_skips_finished_configurations_and_reloads_vanilla(manager, tmp_path):
    first = run_sweep(tiny_sweep(tmp_path, ["few-step:steps=4"]), manager=manager, progress=False)
    before = RunStore(first).summary()
    run_sweep(tiny_sweep(tmp_path, ["few-step:steps=4", "few-step:steps=6"]), manager=manager, progress=False)
    store = RunStore(first)
    after = store.summary()
    assert keys(after) == [("vanilla", "default"), ("few-step", "steps=4"), ("few-step", "steps=6")]
    pd.testing.assert_frame_equal(after.iloc[:2][before.columns], before, check_dtype=False)  # not re-run
    # vanilla's outputs came back from vanilla_outputs.pt and match a fresh vanilla-equivalent run
    assert after.set_index("config_tag").loc["steps=6", "same_tokens"] == 1.0
    assert after.set_index("config_tag").loc["steps=6", "speedup"] > 0
    assert_each_measurement_once(store)
    assert len(json.loads(store.run_json.read_text())["invocations"]) == 2


def test_resumed_sweep_pairs_new_configurations_with_vanilla_timed_in_the_same_invocation(manager, tmp_path):
    """Issue 8, item 4: a resumed sweep re-times vanilla; a new row's speed-up is the median of
    its per-round ratios to that vanilla, and the row names the invocation that timed it."""
    sweep = tiny_sweep(tmp_path, ["few-step:steps=4"], metrics=["same_tokens"])
    run_dir = run_sweep(sweep, manager=manager, progress=False)
    sweep.accelerators = ["few-step:steps=4", "few-step:steps=6"]  # steps=6: vanilla-equivalent
    run_sweep(sweep, manager=manager, progress=False)
    store = RunStore(run_dir)
    s = store.summary().set_index("config_tag")
    assert s["invocation"].tolist() == [0, 0, 1]
    m = store.measurements()
    new = m[m.config_tag == "steps=6"].sort_values("replicate")
    own = new[new.metric == "latency_s_per_image"].value.to_numpy()
    ref = new[new.metric == "vanilla_latency_s_per_image"].value.to_numpy()
    assert len(own) == len(ref) == 3 == s.loc["steps=6", "rounds"]
    assert s.loc["steps=6", "speedup"] == pytest.approx(np.median(ref / own))
    assert (
        s.loc["steps=6", "speedup_ci_low"]
        <= s.loc["steps=6", "speedup"]
        <= s.loc["steps=6", "speedup_ci_high"]
    )
    assert s.loc["steps=6", "vanilla_latency_s_median"] == pytest.approx(np.median(ref))
    first_vanilla = m[(m.accelerator == "vanilla") & (m.metric == "latency_s_per_image")].value
    assert not set(ref) & set(first_vanilla)  # re-timed, not the stored times
    assert s.loc["steps=6", "same_tokens"] == 1.0  # quality still pairs with vanilla's stored outputs
    env = json.loads(store.run_json.read_text())["invocations"][1]["environment"]
    assert env["host"] == s.loc["steps=6", "host"] and env["threads"] == s.loc["steps=6", "threads"]
    assert env["torch_version"] == torch.__version__ and s.loc["steps=6", "device"] == "cpu"
    assert s.loc["steps=6", "timing"] in ("ok", "unstable") and "load_avg_start" in s.columns


def test_min_estimator_run_records_it_and_refuses_to_resume_under_the_other(manager, tmp_path):
    """``--speedup-estimator min``: each row's speed-up is min(vanilla's rounds) / min(its own),
    the row and run.json say so, and resuming that run with the default estimator is refused
    (its rows would mix two estimators)."""
    sweep = tiny_sweep(tmp_path, ["few-step:steps=4"], metrics=["same_tokens"])
    sweep.speedup_estimator = "min"
    run_dir = run_sweep(sweep, manager=manager, progress=False)
    store = RunStore(run_dir)
    s = store.summary().set_index("config_tag")
    m = store.measurements()
    rows = m[m.config_tag == "steps=4"].sort_values("replicate")
    own = rows[rows.metric == "latency_s_per_image"].value.to_numpy()
    ref = rows[rows.metric == "vanilla_latency_s_per_image"].value.to_numpy()
    assert s.loc["steps=4", "speedup"] == pytest.approx(ref.min() / own.min())
    assert set(s["speedup_estimator"]) == {"min"}
    from bench.results import metric_columns

    assert "speedup_estimator" not in metric_columns(s.columns)  # a setting, not a quality metric
    assert json.loads(store.run_json.read_text())["compat"]["speedup_estimator"] == "min"
    sweep.speedup_estimator = "median-ratio"
    with pytest.raises(SweepError, match="speedup_estimator 'min' -> 'median-ratio'"):
        run_sweep(sweep, manager=manager, progress=False)
    sweep.speedup_estimator = "mean"
    with pytest.raises(SweepError, match="unknown speed-up estimator 'mean'"):
        run_sweep(sweep, manager=manager, progress=False)


def test_rerun_of_a_finished_sweep_does_not_regenerate_vanilla(manager, tmp_path):
    """Nothing left to run: vanilla's outputs (needed only by pending configurations) are not
    reloaded, and not regenerated when their file is gone (e.g. a fresh clone of a run)."""
    run_dir = run_sweep(tiny_sweep(tmp_path, ["few-step:steps=4"]), manager=manager, progress=False)
    (run_dir / "vanilla_outputs.pt").unlink()
    run_sweep(tiny_sweep(tmp_path, ["few-step:steps=4"]), manager=manager, progress=False)
    assert not (run_dir / "vanilla_outputs.pt").exists()


def test_killed_run_resumes_with_every_configuration_once(manager, tmp_path, monkeypatch):
    sweep = tiny_sweep(tmp_path, ["few-step:steps=4", "interrupt", "few-step:steps=3"], replicates=2)
    # 1) killed during the timed rounds: nothing of the attempt is recorded
    bench_test_plugin.INTERRUPT["armed"] = True
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, manager=manager, progress=False)
    store = RunStore(tmp_path / "run")
    assert keys(store.summary()) == [] and store.measurements().empty

    # 2) killed between writing its measurements and its summary row (the commit point)
    bench_test_plugin.INTERRUPT["armed"] = False
    real_write = RunStore._write_summary

    def die_on_interrupt_row(self, df):
        if "interrupt" in set(df["accelerator"]):
            raise KeyboardInterrupt("killed mid-append")
        real_write(self, df)

    monkeypatch.setattr(RunStore, "_write_summary", die_on_interrupt_row)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, manager=manager, progress=False)
    assert "interrupt" in set(store.measurements()["accelerator"])  # orphan rows of the killed attempt
    assert "interrupt" not in set(store.summary()["accelerator"])

    assert keys(store.summary()) == [("vanilla", "default"), ("few-step", "steps=4")]  # written before it
    # 3) the rerun drops the orphans, redoes only what is unfinished, duplicates nothing
    monkeypatch.setattr(RunStore, "_write_summary", real_write)
    before = store.summary().set_index(["accelerator", "config_tag"])
    run_sweep(sweep, manager=manager, progress=False)
    summary = store.summary()
    kept = summary.set_index(["accelerator", "config_tag"]).loc[before.index]
    pd.testing.assert_frame_equal(
        kept[before.columns], before, check_dtype=False
    )  # finished rows are kept as they were
    assert sorted(keys(summary)) == sorted(
        [("vanilla", "default"), ("few-step", "steps=4"), ("interrupt", "default"), ("few-step", "steps=3")]
    )
    assert (summary.status == "ok").all()
    assert_each_measurement_once(store)
    m = store.measurements()
    assert ((m.accelerator == "interrupt") & (m.metric == "latency_s_per_image")).sum() == 2


def test_failed_configurations_are_skipped_on_rerun_unless_retried(manager, tmp_path):
    sweep = tiny_sweep(tmp_path, ["boom"], metrics=[])
    run_dir = run_sweep(sweep, manager=manager, progress=False)
    run_sweep(sweep, manager=manager, progress=False)
    assert (run_dir / "errors.log").read_text().count("boom at step 1") == 1  # skipped
    sweep.retry_failed = True
    run_sweep(sweep, manager=manager, progress=False)
    assert (run_dir / "errors.log").read_text().count("boom at step 1") == 2  # retried
    assert keys(RunStore(run_dir).summary()) == [("vanilla", "default"), ("boom", "default")]


def test_incompatible_rerun_is_refused(manager, tmp_path):
    run_sweep(tiny_sweep(tmp_path, [], metrics=[]), manager=manager, progress=False)
    with pytest.raises(SweepError, match="seed 0 -> 1.*another --name"):
        run_sweep(tiny_sweep(tmp_path, [], metrics=[], seed=1), manager=manager, progress=False)


def test_limit_makes_a_smoke_run(manager, tmp_path):
    run_dir = run_sweep(
        tiny_sweep(tmp_path, ["few-step:steps=3"], images=50, limit=3, name=None, metrics=[]),
        manager=manager,
        progress=False,
    )
    assert run_dir.name == "maskgit-Ndefault-n3-b2-seed0-limit3"
    m = RunStore(run_dir).measurements()
    lat = m[m.metric == "latency_s_per_image"]
    assert lat.groupby("accelerator").size().to_dict() == {"few-step": 2, "vanilla": 2}  # batches of 2 and 1


def test_bad_names_and_options_fail_before_anything_runs(manager, tmp_path):
    with pytest.raises(UnknownNameError, match="Did you mean: few-step"):
        run_sweep(tiny_sweep(tmp_path, ["few_step:steps=3"]), manager=manager, progress=False)
    with pytest.raises(SweepError, match="few-step:steps=x.*not an integer"):
        run_sweep(tiny_sweep(tmp_path, ["few-step:steps=x"]), manager=manager, progress=False)
    with pytest.raises(UnknownNameError, match="same_tokens"):
        run_sweep(tiny_sweep(tmp_path, [], metrics=["same_tokes"]), manager=manager, progress=False)
    with pytest.raises(SweepError, match="images must be >= 1"):
        run_sweep(tiny_sweep(tmp_path, [], images=0), manager=manager, progress=False)
    assert not any(tmp_path.iterdir())


def test_default_sweep_specs(manager):
    assert spec_string("x", {"a": 1, "b": (2, 3)}) == "x:a=1,b=2/3"
    specs = default_sweep_specs(manager)
    assert specs[0] == "vanilla" and specs.count("vanilla") == 1
    assert {"few-step:steps=8", "few-step:steps=6", "few-step:steps=4"} <= set(specs)


def test_a_non_default_reference_is_what_every_speed_up_and_metric_is_measured_against(manager, tmp_path):
    """Sweep.reference = few-step:steps=3: it runs first, every configuration's time is paired
    with its time in the same round, metrics vs vanilla compare with its outputs, and its
    outputs are stored under its own name."""
    sweep = tiny_sweep(tmp_path, ["vanilla", "few-step:steps=6"], reference="few-step:steps=3", name=None,
                       metrics=["same_tokens"])  # fmt: skip
    run_dir = run_sweep(sweep, manager=manager, progress=False)
    assert run_dir.name == "maskgit-Ndefault-n4-b2-seed0-ref-few-step_steps=3"  # not the default run's folder
    assert (run_dir / "few-step_outputs.pt").exists() and not (run_dir / "vanilla_outputs.pt").exists()
    store = RunStore(run_dir)
    summary = store.summary()
    assert keys(summary) == [("few-step", "steps=3"), ("vanilla", "default"), ("few-step", "steps=6")]
    s = summary.set_index(["accelerator", "config_tag"])
    ref, van, six = (
        s.loc[("few-step", "steps=3")],
        s.loc[("vanilla", "default")],
        s.loc[("few-step", "steps=6")],
    )
    assert ref.speedup == 1.0 and ref.flop_speedup == 1.0 and ref.same_tokens == 1.0
    assert van.flop_speedup == pytest.approx(0.5) == six.flop_speedup  # 3 steps' FLOPs / 6 steps'
    assert van.same_tokens < 1.0 and six.same_tokens == van.same_tokens  # compared with the 3-step outputs
    m = store.measurements()
    ref_lat = m[
        (m.accelerator == "few-step") & (m.config_tag == "steps=3") & (m.metric == "latency_s_per_image")
    ]
    paired = m[(m.accelerator == "vanilla") & (m.metric == "vanilla_latency_s_per_image")]
    assert list(paired.value) == list(ref_lat.value)  # the reference's own time in each round
    info = json.loads(store.run_json.read_text())
    assert (
        info["sweep"]["reference"] == "few-step:steps=3" and info["compat"]["reference"] == "few-step:steps=3"
    )

    sweep.accelerators = ["vanilla", "few-step:steps=6", "few-step:steps=4"]  # resumes: same derived name
    assert run_sweep(sweep, manager=manager, progress=False) == run_dir
    assert RunStore(run_dir).summary().set_index("config_tag").loc["steps=4", "speedup"] > 0
    with pytest.raises(SweepError, match="reference 'few-step:steps=3' -> 'vanilla:default'"):
        run_sweep(tiny_sweep(tmp_path, [], name=run_dir.name, metrics=["same_tokens"]), manager=manager,
                  progress=False)  # fmt: skip
    with pytest.raises(UnknownNameError, match="Did you mean: few-step"):
        run_sweep(tiny_sweep(tmp_path, [], reference="few_step"), manager=manager, progress=False)
    with pytest.raises(SweepError, match="--reference 'few-step:steps=x'"):
        run_sweep(tiny_sweep(tmp_path, [], reference="few-step:steps=x"), manager=manager, progress=False)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun(tmp_path):
    """A real ``kill -9`` of ``python -m bench run`` during the timed rounds, then a rerun."""
    tests_dir = Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests_dir), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MIGM_BENCH_NO_AUTOLOAD": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "-p",
        "accelerators.vanilla",
        "-p",
        "accelerators.few_step",
        "-p",
        "base_models.maskgit.plugin",
        "-p",
        "bench_test_plugin",
        "run",
        "--model",
        TINY_MODEL,
        "--accel",
        "sleepy:seconds=0.1",
        "--accel",
        "few-step:steps=3",
        "--images",
        "4",
        "--batch-size",
        "2",
        "--replicates",
        "2",
        "--metrics",
        "same_tokens",
        "--out",
        str(tmp_path),
        "--name",
        "run",
        "--device",
        "cpu",
        "--no-progress",
    ]
    run_json, summary = tmp_path / "run" / "run.json", tmp_path / "run" / "summary.csv"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not run_json.exists():  # written when the model is loaded, before the timed rounds
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(1.0)  # sleepy's warm-up and rounds take >= 2 s: we are in the middle of them
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not summary.exists() or pd.read_csv(summary).empty  # nothing half-done was recorded

    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = RunStore(tmp_path / "run")
    final = store.summary()
    assert keys(final) == [("vanilla", "default"), ("sleepy", "seconds=0.1"), ("few-step", "steps=3")]
    assert (final.status == "ok").all() and final.iloc[1].same_tokens == 1.0
    assert_each_measurement_once(store)
    assert torch.load(tmp_path / "run" / "vanilla_outputs.pt")["tokens"].shape == (4, 16)


def test_a_run_in_use_is_refused(manager, tmp_path):
    store = RunStore(tmp_path / "run")
    with store.lock(), pytest.raises(SweepError, match="in use by another migm-bench process"):
        run_sweep(tiny_sweep(tmp_path, [], metrics=[]), manager=manager, progress=False)


def test_resume_cleans_a_torn_csv_mirror_and_stale_temp_files(manager, tmp_path):
    run_dir = run_sweep(tiny_sweep(tmp_path, [], metrics=[]), manager=manager, progress=False)
    store = RunStore(run_dir)
    rows = len(store.measurements())
    store.measurements_csv.write_text(
        store.measurements_csv.read_text() + "garbage,row\n"
    )  # killed mid-mirror
    (run_dir / ".summary.csv.tmp-123").write_text("half a file")
    run_sweep(tiny_sweep(tmp_path, [], metrics=[]), manager=manager, progress=False)
    assert len(pd.read_csv(store.measurements_csv)) == rows
    assert not list(run_dir.glob(".*.tmp-*"))


def test_the_sweep_times_with_its_thread_count_and_restores_torch_s_afterwards(
    manager, tmp_path, monkeypatch
):
    seen = []
    import bench.contestant

    original = bench.contestant.sample

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(bench.contestant, "sample", spy)
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    run_dir = run_sweep(tiny_sweep(tmp_path, ["few-step:steps=3"], threads=wanted), manager=manager)
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary["threads"] == wanted).all()
    with pytest.raises(SweepError, match="threads must be >= 0"):
        run_sweep(tiny_sweep(tmp_path, [], threads=-1, name="neg"), manager=manager)
