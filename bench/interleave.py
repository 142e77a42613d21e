"""Interleaved timing: every configuration's timed batches run round-robin.

On a shared machine the load drifts over minutes. Timed one configuration after another,
a busy minute lands entirely on whichever configuration is running, and its speed-up
against a vanilla timed minutes earlier is wrong. Interleaved, round r times one batch of
*every* configuration (vanilla included), in an order shuffled per round with a fixed seed
(so no configuration always follows the same neighbour), and a configuration's speed-up
is the median over rounds of the paired ratio vanilla_r / config_r (``bench.stats``): a
drift shared by a round cancels in its ratio. The same design as pyperf's interleaved
``compare_to`` runs and the "randomised block" timing of Georges et al. (OOPSLA 2007).

Every contestant is warmed up first (untimed), then ``rounds`` rounds run; round r uses
batch ``r % batches`` so the first ``batches`` rounds produce every image once (those
outputs feed the quality metrics) and later rounds re-time batches with the same seeds.
Only ``generate`` is timed (synchronize + ``perf_counter_ns``, ``bench.timing.timed``).
A contestant that raises is reported through ``on_error`` and leaves the remaining rounds;
``KeyboardInterrupt`` and other non-``Exception`` errors propagate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm import tqdm

from bench.config import DEFAULT_ROUNDS  # noqa: F401 (public here too)
from bench.timing import timed


class Contestant(Protocol):
    key: Hashable

    def warmup(self) -> None:
        """Untimed work before the rounds (lazy init, allocator, caches)."""

    def generate(self, batch: int) -> Any:
        """The timed work: generate batch ``batch``."""

    def record(self, round_: int, batch: int, seconds: float, result: Any) -> None:
        """Untimed: keep the timing and (on the first pass over a batch) the outputs."""


@dataclass
class RoundLog:
    """Which contestant ran where: order[r] = keys in the order round r ran them."""

    order: list[list[Hashable]] = field(default_factory=list)


def round_order(keys: Sequence[Hashable], round_: int, seed: int) -> list[Hashable]:
    """The keys in round ``round_``'s order: a shuffle seeded by (seed, round)."""
    order = list(keys)
    random.Random(f"{seed}-{round_}").shuffle(order)
    return order


def run_rounds(
    contestants: Sequence[Contestant],
    rounds: int,
    batches: int,
    device: torch.device | str,
    on_error: Callable[[Contestant, Exception], None],
    seed: int = 0,
    progress: bool = False,
) -> RoundLog:
    """Warm every contestant up, then time ``rounds`` rounds of one batch each (see module doc)."""
    if rounds < 1 or batches < 1:
        raise ValueError(f"rounds and batches must be >= 1, got {rounds} and {batches}")
    alive: dict[Hashable, Contestant] = {}
    for c in contestants:
        try:
            c.warmup()
        except Exception as err:  # noqa: BLE001 (the contestant is reported and dropped)
            on_error(c, err)
            continue
        alive[c.key] = c
    log = RoundLog()
    bar = tqdm(range(rounds), desc="timed rounds", unit="round", disable=not progress)
    for r in bar:
        j = r % batches
        order = round_order(list(alive), r, seed)
        log.order.append(order)
        for key in order:
            c = alive[key]
            try:
                with timed(device) as watch:
                    result = c.generate(j)
                c.record(r, j, watch.seconds, result)
            except Exception as err:  # noqa: BLE001
                on_error(c, err)
                del alive[key]
    bar.close()
    return log
