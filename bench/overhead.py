"""The sampling loop's own cost: generation time spent outside the accelerator's steps.

Every configuration's ``bench.sampling.sample`` call is timed whole, and inside it each
``accelerator.step`` call (the model forwards, the accelerator's caches and any shortcut
network) is timed too; the rest (CFG combination, token sampling, reveal selection,
scatters, building step contexts) is the loop's own cost, which dilutes every speed-up
equally. Configurations run in interleaved rounds (``bench.interleave``), so their
speed-ups against vanilla are paired per round like the runner's. The minor page faults of
each timed batch are counted too: memory the allocator gave back to the kernel and touched
again, a cost that depends on what ran before (``bench.timing.keep_freed_memory``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from bench import stats
from bench.interleave import run_rounds
from bench.plugins import PluginManager
from bench.protocol import AcceleratorWrapper, BaseModel, StepContext, StepOutput
from bench.sampling import sample
from bench.timing import median, minor_faults, synchronize

REFERENCE = "vanilla"


class StepTimer(AcceleratorWrapper):
    """Wraps an accelerator; ``step_ns`` sums the time spent in its ``step`` calls."""

    def __init__(self, inner: Any, device: torch.device) -> None:
        super().__init__(inner)
        self.device = device
        self.step_ns = 0

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        self.step_ns = 0
        super().reset(model, batch_rows)

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        synchronize(self.device)
        start = time.perf_counter_ns()
        out = self.inner.step(model, ctx)
        synchronize(self.device)
        self.step_ns += time.perf_counter_ns() - start
        return out


@dataclass
class _Timed:
    """One configuration in the rounds: per round, generation and in-step seconds per image and
    the batch's minor page faults."""

    key: str
    timer: StepTimer
    run: Any  # batch index -> sample() of that batch
    warm: Any
    images: int
    total: list[float] = dataclasses.field(default_factory=list)
    in_steps: list[float] = dataclasses.field(default_factory=list)
    faults: list[int] = dataclasses.field(default_factory=list)

    def warmup(self) -> None:
        self.warm()

    def generate(self, batch: int) -> tuple[int, int]:
        before = minor_faults()
        self.run(batch)
        return self.timer.step_ns, minor_faults() - before

    def record(self, round_: int, batch: int, seconds: float, result: tuple[int, int]) -> None:
        step_ns, faults = result
        self.total.append(seconds / self.images)
        self.in_steps.append(step_ns / 1e9 / self.images)
        self.faults.append(faults)


def measure_loop_overhead(
    manager: PluginManager,
    model: BaseModel,
    specs: list[str],
    batch_size: int,
    rounds: int,
    device: torch.device,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per configuration (vanilla first): spec, steps, generation / in-step / loop
    seconds per image (medians over rounds), loop share of its own generation, the paired
    speed-up against vanilla with its 95 % interval, and minor page faults per batch (median)."""
    settings = model.default_sampling
    cond = model.conditions(batch_size, torch.Generator().manual_seed(seed)).to(device)  # (b,)
    contestants: list[_Timed] = []
    for spec in dict.fromkeys([REFERENCE, *specs]):
        timer = StepTimer(manager.make_accelerator(spec), device)

        def run(batch: int, timer: StepTimer = timer, n: int = batch_size) -> None:
            sample(model, timer, cond[:n], torch.Generator(device=device).manual_seed(seed + batch), settings)

        contestants.append(_Timed(spec, timer, run, lambda run=run: run(0), batch_size))
    errors: list[str] = []
    run_rounds(contestants, rounds, 1, device, lambda c, e: errors.append(f"{c.key}: {e}"), seed)
    if errors:
        raise RuntimeError("; ".join(errors))
    reference = contestants[0].total
    rows = []
    for c in contestants:
        loop = [t - s for t, s in zip(c.total, c.in_steps)]  # seconds per image outside the steps
        speedup = stats.paired_speedup(reference, c.total, seed=seed)
        rows.append({
            "spec": c.key,
            "steps": c.timer.num_steps(settings.steps),
            "generation_s_per_image": median(c.total),
            "in_steps_s_per_image": median(c.in_steps),
            "loop_s_per_image": median(loop),
            "loop_share": median([lp / t for lp, t in zip(loop, c.total)]),
            "speedup": speedup.value,
            "speedup_ci_low": speedup.low,
            "speedup_ci_high": speedup.high,
            "generation_cv": stats.cv(c.total),
            "faults_per_batch": median(c.faults),
        })  # fmt: skip
    return pd.DataFrame(rows)


def overhead_report(table: pd.DataFrame, limit: float = 0.05) -> list[str]:
    """Printable lines: one per configuration, then the loop's cost against the target."""
    header = f"{'configuration':44} {'N':>3} {'ms/img':>8} {'loop ms/img':>11} {'loop %':>7} {'faults':>7}"
    lines = [f"{header}  speed-up [95 % CI]"]
    for _, r in table.iterrows():
        lines.append(
            f"{r['spec']:44} {r['steps']:>3} {1e3 * r['generation_s_per_image']:8.2f} "
            f"{1e3 * r['loop_s_per_image']:11.2f} {100 * r['loop_share']:6.1f}% {r['faults_per_batch']:7.0f}  "
            f"{r['speedup']:.2f}x [{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}]"
        )
    fastest = table.loc[table["generation_s_per_image"].idxmin()]
    worst = table.loc[table["loop_share"].idxmax()]
    verdict = "meets" if fastest["loop_share"] <= limit else "misses"
    lines.append(
        f"loop overhead: the fastest configuration ({fastest['spec']}) spends {100 * fastest['loop_share']:.1f} % of "
        f"its generation time outside the model steps ({verdict} the target <= {100 * limit:.0f} %); "
        f"largest share: {worst['spec']} {100 * worst['loop_share']:.1f} %"
    )
    return lines
