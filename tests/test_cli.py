"""The ``migm-bench`` command line."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_MODEL

from bench import cli
from bench.cli import main
from bench.hookspecs import hookimpl

SMALL = ["--images", "2", "--batch-size", "2", "--replicates", "1", "--device", "cpu", "--no-progress"]


def test_ls_lists_everything_with_providers(default_manager, capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    sections = out.split("accelerators:")
    assert "maskgit" in sections[0] and "[base_models.maskgit.hooks]" in sections[0]
    few = next(line for line in out.splitlines() if line.strip().startswith("few-step"))
    assert "[accelerators.hooks.few_step]" in few and "default sweep: 3" in few and "fewer steps" in few
    metric = next(line for line in out.splitlines() if line.strip().startswith("same_tokens"))
    assert "higher is better" in metric and "vs vanilla" in metric and "default" in metric


def test_run_with_flags_writes_a_run(default_manager, tmp_path, capsys):
    argv = [
        "run",
        "--model",
        TINY_MODEL,
        "--accel",
        "few-step:steps=3",
        "--accel",
        "few-step:steps=2",
        "--metrics",
        "same_tokens,mean_pixel",
        "--out",
        str(tmp_path),
        "--name",
        "cli",
        *SMALL,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"results: {tmp_path / 'cli'}" in out
    summary = pd.read_csv(tmp_path / "cli" / "summary.csv")
    assert list(summary.config_tag) == ["default", "steps=3", "steps=2"]
    assert {"same_tokens", "mean_pixel"} <= set(summary.columns)


def test_run_without_accelerators_uses_the_default_sweep_and_model(default_manager, tmp_path, monkeypatch):
    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)  # instead of cli.DEFAULT_MODEL
    assert main(["run", "--out", str(tmp_path), "--name", "d", "--metrics", "", *SMALL]) == 0
    summary = pd.read_csv(tmp_path / "d" / "summary.csv")
    # vanilla + few-step's default sweep (steps 8, 6, 4); the boom/sleepy test accelerators have none
    assert list(summary.accelerator) == ["vanilla", "few-step", "few-step", "few-step"]
    assert set(summary.config_tag) == {"default", "steps=6", "steps=4"}  # steps=8 is few-step's default


def test_yaml_config_with_flag_overrides(default_manager, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"model: {TINY_MODEL}\naccelerators: [few-step:steps=3]\nbatch-size: 2\nimages: 4\n"
        "metrics: same_tokens\nseed: 5\n"
    )
    argv = [
        "run",
        "--config",
        str(config),
        "--images",
        "2",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--device",
        "cpu",
        "--replicates",
        "1",
    ]
    assert main(argv) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run_dir.name == "maskgit-Ndefault-n2-b2-seed5"  # images from the flag, seed from the file
    assert list(pd.read_csv(run_dir / "summary.csv").config_tag) == ["default", "steps=3"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "--model", TINY_MODEL, "--accel", "few_step"],
            "unknown accelerator 'few_step'. Did you mean: few-step?",
        ),
        (["run", "--model", "maskgti"], "unknown base model 'maskgti'. Did you mean: maskgit?"),
        (["run", "--model", TINY_MODEL, "--accel", "few-step:stepz=2"], "Did you mean: steps?"),
        (["run", "--model", TINY_MODEL, "--metrics", "same_tokns"], "Did you mean: same_tokens?"),
        (["-p", "no_such_plugin_module", "ls"], "cannot import plugin module 'no_such_plugin_module'"),
        (["plot", "/nonexistent/run"], "is not a run directory"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(default_manager, tmp_path, capsys, argv, message):
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "run" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migm-bench: error:") and message in err and err.count("\n") == 1


def test_bad_yaml_keys_are_reported(default_manager, tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text("modle: x\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown key 'modle'. Did you mean: model?" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read sweep file" in capsys.readouterr().err


def test_failed_configuration_gives_exit_status_1(default_manager, tmp_path, capsys):
    argv = ["run", "--model", TINY_MODEL, "--accel", "boom", "--metrics", "", "--out", str(tmp_path), *SMALL]
    assert main(argv) == 1
    assert "1 configuration(s) failed" in capsys.readouterr().err


def test_plot_and_report_call_bench_plots(default_manager, tmp_path, monkeypatch, capsys):
    (tmp_path / "summary.csv").write_text("accelerator\nvanilla\n")
    calls = []
    fake = types.ModuleType("bench.plots")
    fake.plot_run = lambda run_dir: calls.append(("plot", run_dir)) or [run_dir / "pareto.png"]
    fake.report_markdown = lambda run_dir: calls.append(("report", run_dir)) or "# report"
    monkeypatch.setitem(sys.modules, "bench.plots", fake)
    assert main(["plot", str(tmp_path)]) == 0
    assert main(["report", str(tmp_path)]) == 0
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "pareto.png") in out and "# report" in out
    assert (tmp_path / "r.md").read_text() == "# report"
    assert [c[0] for c in calls] == ["plot", "report", "report"]


def test_plugins_can_add_commands(default_manager, capsys):
    assert main(["hello", "--who", "migm"]) == 0
    assert capsys.readouterr().out.strip() == "hello migm"


def test_default_model_constant():
    assert cli.DEFAULT_MODEL == "fashion"


def _sweep(manager, argv):
    return cli.sweep_from_args(cli.build_parser(manager).parse_args(["run", *argv]), manager)


def test_default_run_name_and_changed_settings(default_manager, monkeypatch):
    """A bare run measures into results/default (git-ignored); a first try with other settings
    (--images 20) gets a name of its own instead of clashing with that sweep."""
    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)
    bare = _sweep(default_manager, [])
    assert (bare.name, bare.images, bare.batch_size, bare.replicates) == ("default", 250, 25, 10)
    small = _sweep(default_manager, ["--images", "20"])
    assert small.name is None and small.images == 20  # the runner derives the name from the settings
    assert _sweep(default_manager, ["--images", "20", "--name", "mine"]).name == "mine"
    assert _sweep(default_manager, ["--rounds", "4"]).replicates == 4


def test_another_models_default_run_gets_its_own_folder(default_manager, monkeypatch):
    """`migm-bench run --model fashion-t2i` is that model's default benchmark (250 images, the
    default sweep) in results/default-fashion-t2i, so it never clashes with the default
    model's results/default; --name still wins, and the default model keeps 'default'."""
    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)
    other = _sweep(default_manager, ["--model", "fashion-t2i"])
    assert (other.name, other.model) == ("default-fashion-t2i", "fashion-t2i")
    assert (
        _sweep(default_manager, ["--model", "dimoo:checkpoint=/m/x"]).name == "default-dimoo_checkpoint=_m_x"
    )
    assert _sweep(default_manager, ["--model", "fashion-t2i", "--name", "mine"]).name == "mine"
    assert _sweep(default_manager, ["--model", TINY_MODEL]).name == "default"
    assert _sweep(default_manager, ["--model", "fashion-t2i", "--images", "8"]).name is None  # derived


def test_a_model_declares_its_own_default_run_size(default_manager, monkeypatch):
    """BaseModelSpec.default_run replaces the default run's images / batch size / rounds for
    that model (a costlier forward keeps the 10-minute budget); flags still win."""
    from bench.specs import BaseModelSpec

    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)
    tiny = default_manager.get_base_model(TINY_MODEL.split(":")[0])

    class Plugin:
        @hookimpl
        def register_base_models(self, register):
            register(BaseModelSpec(name="costly", config_cls=tiny.config_cls, factory=tiny.factory,
                                   default_run={"images": 60, "batch_size": 12, "replicates": 5}))  # fmt: skip

    default_manager.register(Plugin(), "costly-plugin")
    chosen = _sweep(default_manager, ["--model", "costly"])
    assert (chosen.name, chosen.images, chosen.batch_size, chosen.replicates) == ("default-costly", 60, 12, 5)
    assert _sweep(default_manager, ["--model", "costly", "--rounds", "3"]).replicates == 3
    assert _sweep(default_manager, []).images == 250  # the default model keeps DEFAULT_RUN


def test_a_model_adds_the_configurations_only_it_ships_weights_for(default_manager, monkeypatch):
    """BaseModelSpec.extra_sweep joins the default sweep for that model only: fashion-t2i's narrow
    shortcut runs in its default benchmark, never in another model's."""
    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)
    narrow = "shortcut:steps=16,budget=6,variant=narrow"
    default_manager.register(importlib.import_module("base_models.fashion_t2i.hooks"))
    t2i = _sweep(default_manager, ["--model", "fashion-t2i"]).accelerators
    assert t2i[-1] == narrow and t2i[:-1] == _sweep(default_manager, []).accelerators
    assert narrow not in _sweep(default_manager, ["--model", "fashion"]).accelerators
    both = _sweep(
        default_manager, ["--model", "fashion-t2i", "--default-sweep", "--accel", "few-step:steps=3"]
    )
    assert both.accelerators[-2:] == [narrow, "few-step:steps=3"]
    assert _sweep(
        default_manager, ["--model", "fashion-t2i", "--accel", "few-step:steps=3"]
    ).accelerators == ["few-step:steps=3"]  # an explicit sweep is taken as given


def test_run_is_compared_with_the_committed_reference_of_its_own_model(tmp_path):
    from bench.compare import matching_reference, reference_comparison

    def run_folder(name: str, model: str, speedup: float) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"compat": {"model": model, "steps": None}}))
        pd.DataFrame([{"accelerator": "few-step", "config_tag": "steps=4", "status": "ok", "speedup": speedup}]
                     ).to_csv(d / "summary.csv", index=False)  # fmt: skip
        return d

    fashion = run_folder("reference-cpu", "fashion:default", 4.0)
    t2i = run_folder("reference-cpu-fashion-t2i", "fashion-t2i:default", 3.0)
    mine = run_folder("mine", "fashion-t2i:default", 2.7)
    assert matching_reference(mine, [fashion, t2i]) == t2i
    assert matching_reference(run_folder("other", "maskgit:default", 1.0), [fashion, t2i]) is None
    lines = reference_comparison(mine, t2i)
    assert "| few-step | steps=4 | 3.00x | 2.70x | -10.0 % |" in lines
    assert reference_comparison(mine, fashion) == []  # another model: nothing to compare
    assert reference_comparison(t2i, t2i) == []


def test_reference_option(default_manager, monkeypatch, capsys):
    monkeypatch.setenv("MIGM_BENCH_MODEL", TINY_MODEL)
    assert _sweep(default_manager, []).reference == "vanilla"
    chosen = _sweep(default_manager, ["--reference", "few-step:steps=4"])
    assert chosen.reference == "few-step:steps=4" and chosen.name is None  # not the default run's folder
    assert chosen.accelerators[0] == "few-step:steps=4"  # the default sweep starts with its reference
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--reference SPEC" in capsys.readouterr().out


def test_noise_check_runs_quiet_and_loaded_and_compares(default_manager, tmp_path, monkeypatch, capsys):
    from contextlib import nullcontext

    from bench import compare

    monkeypatch.setattr(compare, "cpu_hog", nullcontext)  # the real hog is tested on its own
    argv = ["noise-check", "--model", TINY_MODEL, "--accel", "few-step:steps=3", "--images", "2",
            "--batch-size", "2", "--rounds", "2", "--out", str(tmp_path), "--device", "cpu", "--no-progress"]  # fmt: skip
    status = main(argv)
    out = capsys.readouterr().out
    (check,) = tmp_path.iterdir()
    assert {p.name for p in check.iterdir()} == {"quiet", "hog"}
    row = next(line for line in out.splitlines() if line.startswith("| few-step | steps=3 |"))
    quiet, hog = (
        pd.read_csv(check / name / "summary.csv").set_index("config_tag") for name in ("quiet", "hog")
    )
    diff = hog.loc["steps=3", "speedup"] / quiet.loc["steps=3", "speedup"] - 1
    assert f"{100 * diff:+.1f} %" in row and f"{quiet.loc['steps=3', 'speedup']:.2f}x" in row
    verdict = next(line for line in out.splitlines() if line.startswith(("PASS", "FAIL")))
    assert (
        verdict.startswith("PASS" if status == 0 else "FAIL")
        and "of 2 speed-ups agree within 10 %" in verdict
        and "--speedup-estimator median-ratio" in verdict
    )
    # the same rounds under every estimator; the run's own one reproduces the verdict's count
    within = verdict.split(":")[1].split(" of ")[0].strip()
    by_estimator = {line.split("--speedup-estimator ")[1].split(":")[0]: line for line in out.splitlines()
                    if line.startswith("  same rounds")}  # fmt: skip
    assert set(by_estimator) == {"median-ratio", "min"}
    assert by_estimator["median-ratio"].split(": ")[1].startswith(f"{within} of 2 within 10 %")
    noise = next(line for line in out.splitlines() if "moves hold 0 in their 95 % interval" in line)
    assert " of 2 moves" in noise and "--speedup-estimator median-ratio" in noise


def test_cpu_hog_runs_while_the_block_runs():
    from bench.compare import cpu_hog

    with cpu_hog() as hog:
        assert hog.poll() is None
    assert hog.poll() is not None
