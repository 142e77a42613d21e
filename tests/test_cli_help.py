"""``migm-bench run --help`` states the defaults a run really uses."""

from __future__ import annotations

import re

import pytest

from bench.cli import build_parser, main, sweep_from_args


@pytest.fixture
def run_help(default_manager, capsys, monkeypatch) -> str:
    monkeypatch.delenv("MIGM_BENCH_MODEL", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["run", "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse's line wrapping undone


def resolved(manager, *argv: str):
    """The Sweep ``migm-bench run ARGV`` would run."""
    args = build_parser(manager).parse_args(["run", *argv])
    return sweep_from_args(args, manager)


def stated(help_text: str, pattern: str) -> str:
    match = re.search(pattern, help_text)
    assert match, f"--help does not say {pattern!r}"
    return match.group(1)


def test_run_help_states_the_defaults_of_a_bare_run(run_help, default_manager):
    bare = resolved(default_manager)
    assert int(stated(run_help, r"images per configuration \(default (\d+) without")) == bare.images
    assert int(stated(run_help, r"images per sampling call \(default (\d+) without")) == bare.batch_size
    assert int(stated(run_help, r"vanilla included \(default (\d+);")) == bare.replicates
    assert stated(run_help, r"--model MODEL base model spec \(default '([^']+)'") == bare.model
    assert stated(run_help, r"run name \(default: '([^']+)' without") == bare.name
    assert int(stated(run_help, r"warm-up batches \(default (\d+)\)")) == bare.warmup
    assert int(stated(run_help, r"base seed \(default (\d+)\)")) == bare.seed
    assert "vanilla" in bare.accelerators and len(bare.accelerators) > 1  # the default sweep


def test_run_help_states_the_defaults_with_accelerators(run_help, default_manager):
    given = resolved(default_manager, "--accel", "few-step:steps=3")
    assert (
        int(stated(run_help, r"images per configuration \(default \d+ without [^)]*\), else (\d+)"))
        == given.images
    )
    assert (
        int(stated(run_help, r"sampling call \(default \d+ without [^)]*\), else (\d+)")) == given.batch_size
    )
    assert given.name is None  # "else derived from the settings"
    assert given.accelerators == ["few-step:steps=3"]  # --accel replaces the default sweep
