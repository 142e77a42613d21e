"""bench.stats and bench.interleave: paired speed-ups, bootstrap intervals, stability, round order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import stats
from bench.interleave import round_order, run_rounds


def test_paired_ratios_cancel_a_drift_that_two_medians_do_not():
    """The machine slows down 3x over the run. Vanilla takes 10 units, the configuration 4
    (a true 2.5x). Timed in blocks (vanilla in the quiet first half, the configuration in the
    busy second half) the ratio of medians is far off; paired per round it is exact."""
    load = np.linspace(1.0, 3.0, 20)
    vanilla, config = 10 * load, 4 * load  # the same round sees the same load
    est = stats.paired_speedup(vanilla, config)
    assert (
        est.value == pytest.approx(2.5) and est.low == pytest.approx(2.5) and est.high == pytest.approx(2.5)
    )
    blocked = np.median(10 * load[:10]) / np.median(4 * load[10:])
    assert abs(blocked - 2.5) > 0.5  # what timing one configuration after the other would report


def test_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(1)
    small, large = rng.normal(5.0, 1.0, 20), rng.normal(5.0, 1.0, 2000)
    a, b = stats.mean_interval(small), stats.mean_interval(large)
    assert a.low < a.value < a.high and b.low < 5.0 < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5  # ~ 1 / sqrt(n): 10x the data, a tenth the width
    # the mean's 95 % interval is ~ +- 1.96 sigma / sqrt(n) = +- 0.044 for n = 2000
    assert b.high - b.low == pytest.approx(2 * 1.96 / math.sqrt(2000), rel=0.15)
    assert stats.mean_interval(small) == a  # seeded: the same data give the same interval


def test_spread_interval_and_degenerate_inputs():
    est = stats.spread_interval(10.0, [9.0, 11.0, 9.0, 11.0])  # sd = 1.1547
    assert est.value == 10.0 and est.high - 10.0 == pytest.approx(1.959964 * 1.1547005, rel=1e-5)
    assert math.isnan(stats.spread_interval(3.0, [1.0]).low)
    assert math.isnan(stats.median_interval([]).value)
    one = stats.median_interval([2.0])
    assert (one.value, one.low, one.high) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="differ in length"):
        stats.paired_speedup([1.0, 2.0], [1.0])


def test_stability_flags():
    assert stats.cv([1.0, 1.0, 1.0]) == 0.0 and math.isnan(stats.cv([1.0]))
    assert stats.timing_problems(0.02, 1.9, 2.0) == []  # quiet: 90 % of the FLOP saving realised
    noisy = stats.timing_problems(0.25, 1.9, 2.0)
    assert len(noisy) == 1 and "25 %" in noisy[0]
    # the case: a 6.1x speed-up from a 2.67x FLOP saving realises 134 % of it
    impossible = stats.timing_problems(0.02, 6.1, 2.67)
    assert len(impossible) == 1 and "134 %" in impossible[0]
    assert stats.timing_problems(0.02, 0.8, 1.05) == []  # too little FLOP saving to judge
    assert stats.saving_realised(2.0, 2.0) == 1.0 and math.isnan(stats.saving_realised(1.0, 1.0))


def test_intervals_separate():
    a, b = stats.Estimate(3.0, 2.5, 3.5), stats.Estimate(2.0, 1.0, 2.6)
    assert not stats.intervals_separate(a, b)  # 2.5 < 2.6: overlapping
    assert stats.intervals_separate(a, stats.Estimate(2.0, 1.0, 2.4))
    assert stats.intervals_separate(stats.Estimate(3.0), stats.Estimate(2.0))  # no intervals: points


class Fake:
    """A contestant that logs every call into a shared list."""

    def __init__(self, key, log, fail_at=None):
        self.key, self.log, self.fail_at = key, log, fail_at
        self.recorded = []

    def warmup(self):
        self.log.append(("warmup", self.key))

    def generate(self, batch):
        if self.fail_at == len(self.recorded):
            raise RuntimeError(f"{self.key} broke")
        self.log.append(("generate", self.key, batch))
        return batch * 10

    def record(self, round_, batch, seconds, result):
        assert seconds >= 0 and result == batch * 10
        self.recorded.append((round_, batch))


def test_rounds_interleave_every_contestant_and_drop_failures():
    log, errors = [], []
    fakes = [Fake("vanilla", log), Fake("a", log), Fake("b", log, fail_at=2), Fake("c", log)]
    rounds = run_rounds(
        fakes, rounds=5, batches=2, device="cpu", on_error=lambda c, e: errors.append((c.key, str(e)))
    )
    assert log[:4] == [("warmup", k) for k in ("vanilla", "a", "b", "c")]  # all warm-ups before any timing
    expected = []
    for r in range(5):  # every live contestant once per round, in the round's order, on batch r % 2
        keys = rounds.order[r]
        assert sorted(keys) == sorted(["vanilla", "a", "c"] + (["b"] if r < 3 else []))
        expected += [("generate", k, r % 2) for k in keys if not (k == "b" and r == 2)]  # b raised in round 2
    assert log[4:] == expected
    assert errors == [("b", "b broke")] and fakes[1].recorded == [(r, r % 2) for r in range(5)]
    assert len({tuple(o) for o in rounds.order[:2]}) == 2  # the order is shuffled per round
    assert round_order(["x", "y", "z"], 3, seed=0) == round_order(["x", "y", "z"], 3, seed=0)


def test_loop_overhead_splits_generation_time(manager):
    """Every sampling call is timed whole and every accelerator step inside it: the rest is the
    loop's own cost, a positive share of the generation time below 1."""
    import torch
    from conftest import TINY_MODEL

    from bench.overhead import measure_loop_overhead, overhead_report

    model = manager.make_base_model(TINY_MODEL)
    table = measure_loop_overhead(manager, model, ["few-step:steps=3"], 2, 3, torch.device("cpu"))
    assert table["spec"].tolist() == ["vanilla", "few-step:steps=3"] and table["steps"].tolist() == [6, 3]
    assert (table["in_steps_s_per_image"] < table["generation_s_per_image"]).all()
    assert ((table["loop_share"] > 0) & (table["loop_share"] < 1)).all()
    assert table.loc[0, "speedup"] == 1.0  # vanilla against itself, round by round
    assert (table["faults_per_batch"] >= 0).all()  # minor page faults of each timed batch (median)
    lines = overhead_report(table)
    assert lines[-1].startswith("loop overhead: the fastest configuration (") and "target <= 5 %" in lines[-1]


def test_min_estimator_takes_the_fastest_rounds_and_resamples_them_in_pairs():
    """Round 2 is disturbed for the configuration (0.8 instead of ~0.45): the median of the
    ratios [2, 3, 1.25] is 2, the fastest rounds give 1.0 / 0.4 = 2.5 (Chen & Revels' rule:
    noise only adds time)."""
    ref, own = [1.0, 1.2, 1.0], [0.5, 0.4, 0.8]
    assert stats.paired_speedup(ref, own).value == pytest.approx(2.0)
    est = stats.min_speedup(ref, own)
    assert est.value == pytest.approx(2.5)
    # every bootstrap resample is min(ref[rows]) / min(own[rows]) over rows drawn together:
    # the smallest possible is 1.0 / 0.8 (only round 2), the largest 1.2 / 0.4 (only round 1)
    assert 1.0 / 0.8 - 1e-9 <= est.low <= est.value <= est.high <= 1.2 / 0.4 + 1e-9
    assert stats.speedup(ref, own, "min") == est and stats.speedup(ref, own) == stats.paired_speedup(ref, own)
    one = stats.min_speedup([2.0], [1.0])
    assert (one.value, one.low, one.high) == (2.0, 2.0, 2.0)
    assert math.isnan(stats.min_speedup([math.nan], [1.0]).value)  # no usable round
    with pytest.raises(ValueError, match="unknown speed-up estimator 'mean'"):
        stats.speedup(ref, own, "mean")


def test_estimator_names_agree_between_config_and_stats():
    from bench.config import DEFAULT_SPEEDUP_ESTIMATOR, SPEEDUP_ESTIMATORS

    assert tuple(stats.SPEEDUP_ESTIMATORS) == SPEEDUP_ESTIMATORS
    assert DEFAULT_SPEEDUP_ESTIMATOR == "median-ratio"  # the rule stays the default


@pytest.mark.parametrize("estimator", ["median-ratio", "min"])
def test_speedup_change_between_two_runs(estimator):
    """The move of a speed-up between two independent runs: its point is the ratio of the two
    runs' own speed-ups minus 1; noise alone keeps 0 inside the interval, a real 1.5x change
    does not; a run without a usable round gives NaN."""
    rng = np.random.default_rng(1)
    ref = 6.0 * (1 + 0.05 * rng.standard_normal(20))
    own = 3.0 * (1 + 0.05 * rng.standard_normal(20))  # a 2x configuration
    ref2 = 6.0 * (1 + 0.05 * rng.standard_normal(20))
    own2 = 3.0 * (1 + 0.05 * rng.standard_normal(20))  # the same, measured again
    same = stats.speedup_change((ref, own), (ref2, own2), estimator)
    expected = stats.speedup(ref2, own2, estimator).value / stats.speedup(ref, own, estimator).value - 1
    assert same.value == pytest.approx(expected) and same.low <= 0 <= same.high
    faster = stats.speedup_change((ref, own), (ref2, own2 / 1.5), estimator)
    # own times 1.5x shorter: the second speed-up is exactly 1.5x the unchanged one's
    assert faster.value == pytest.approx(1.5 * (same.value + 1) - 1) and faster.low > 0
    assert math.isnan(stats.speedup_change(([math.nan], [1.0]), (ref, own), estimator).value)
    with pytest.raises(ValueError, match="unknown speed-up estimator"):
        stats.speedup_change((ref, own), (ref2, own2), "mean")


def test_every_estimator_has_a_resampled_statistic():
    """speedup_change knows every --speedup-estimator, and its statistic on one unresampled row
    is the estimator's own point value."""
    ref, own = np.array([1.0, 1.2, 1.0]), np.array([0.5, 0.4, 0.8])
    for name in stats.SPEEDUP_ESTIMATORS:
        assert stats._RESAMPLED[name](ref[None], own[None])[0] == pytest.approx(
            stats.speedup(ref, own, name).value
        )
