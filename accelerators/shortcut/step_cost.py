"""The per-call cost of a shortcut step against a base step, measured side by side.

Shared by ``migm-bench shortcut cost`` for both network families (``cost.measure_cost`` for
MaskGIT-Shortcut, ``dimoo_cost.measure_dimoo_cost`` for DiMOO-Shortcut): each builds its calls on
its own inputs, this module times and counts them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from bench.flops import count_flops
from bench.timing import interleaved_replicates, median


class StepCalls(NamedTuple):
    """What a vanilla step and a shortcut step run: ``blocks()`` the base forward's features,
    ``net()`` the shortcut's prediction of them, ``head(features)`` the logits either step needs."""

    blocks: Callable[[], torch.Tensor]
    net: Callable[[], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]


def measure_calls(
    calls: StepCalls, feats: torch.Tensor, rows: int, replicates: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Per row: FLOPs and median latency of a base step (blocks + head) and a shortcut step (network
    + head), and of the blocks and the network alone, all four timed interleaved
    (``interleaved_replicates``). c = shortcut step / base step (what S* needs); the network-only
    ratios compare the network with the blocks (the paper's "1/20 of the base": the head is the base
    model's own, run by both steps). Latency ratios are medians of the paired per-replicate ratios."""
    fns = {
        "base": lambda: calls.head(calls.blocks()),
        "shortcut": lambda: calls.head(calls.net()),
        "blocks": calls.blocks,
        "net": calls.net,
    }
    times = interleaved_replicates(fns, device, replicates, warmup=2)  # ns per call, paired by replicate
    out: dict[str, float] = {}
    for name in ("base", "shortcut"):
        out[f"{name}_flops"] = count_flops(fns[name]) / rows
        out[f"{name}_latency_s"] = median(times[name]) / 1e9 / rows
    out["head_flops"] = count_flops(lambda: calls.head(feats)) / rows
    out["net_latency_s"] = median(times["net"]) / 1e9 / rows
    out["blocks_latency_s"] = median(times["blocks"]) / 1e9 / rows
    out["net_only_ratio_flops"] = (out["shortcut_flops"] - out["head_flops"]) / (
        out["base_flops"] - out["head_flops"]
    )
    out["net_only_ratio_latency"] = paired_ratio(times["net"], times["blocks"])
    out["c_flops"] = out["shortcut_flops"] / out["base_flops"]
    out["c_latency"] = paired_ratio(times["shortcut"], times["base"])
    return out


def paired_ratio(numerator: list[int], denominator: list[int]) -> float:
    """Median of the per-replicate ratios (replicate j of both ran back to back)."""
    return median([a / b for a, b in zip(numerator, denominator)])
