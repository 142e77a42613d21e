"""``migm-bench machine-noise``: the statistics it prints, on series whose values are known."""

from __future__ import annotations

import math

import numpy as np

from bench.cli import main
from bench.machine_noise import autocorrelation, block_cv, cv, summary


def test_statistics_follow_their_definitions():
    steady = np.full(64, 0.1)
    assert math.isclose(cv(steady), 0.0, abs_tol=1e-12) and math.isclose(
        block_cv(steady, 4), 0.0, abs_tol=1e-12
    )
    alternating = np.array([1.0, 3.0] * 32)  # mean 2, population std 1
    assert math.isclose(cv(alternating), 0.5)
    assert math.isclose(block_cv(alternating, 2), 0.0, abs_tol=1e-12)  # each pair averages to 2
    assert math.isclose(autocorrelation(alternating, 1), -1.0) and math.isclose(
        autocorrelation(alternating, 2), 1.0
    )
    assert math.isnan(block_cv(alternating, 64)) and math.isnan(autocorrelation(alternating[:3], 5))
    # independent noise: block means of 16 vary about 1/4 as much as single samples
    white = 1.0 + 0.1 * np.random.default_rng(0).standard_normal(4096)
    assert 0.18 < block_cv(white, 16) / cv(white) < 0.32
    s = summary(white, white)
    assert s["samples"] == 4096 and s["cv_wall"] == s["cv_cpu"] and abs(s["autocorr_lag1"]) < 0.1


def test_command_prints_its_figures(capsys):
    assert main(["machine-noise", "--seconds", "0.3", "--sample-ms", "5"]) == 0
    out = capsys.readouterr().out
    assert "CV of the samples: wall" in out and "thread CPU time" in out
    assert "autocorrelation at lag: 1 (" in out and "CV of block means: 4 (" in out


def test_bad_durations_are_one_line_errors(capsys):
    assert main(["machine-noise", "--seconds", "0"]) == 2
    assert main(["machine-noise", "--sample-ms", "-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--seconds and --sample-ms must be > 0" in line for line in err)
