"""``migm-bench shortcut overhead``: the loop's own cost and the shortcut against its limit S*.

In one process, side by side: vanilla, the shortcut's (N, B) schedules and few-step run in
interleaved rounds (``bench.overhead``), giving each configuration's time outside the model
steps and its paired speed-up against vanilla; then the shortcut's per-call cost c (latency,
``accelerators.shortcut.cost.measure_cost`` on the same batch rows) gives the cost-model
limit S* = N / (B + (N - B) c), and the measured speed-up is reported as a share of it.
Targets (issue 8, item 6): loop time <= 5 % of the fastest configuration's generation time,
shortcut speed-up >= 95 % of S*.

The process keeps freed memory (``bench.timing.keep_freed_memory``): with glibc's default
trimming, a full step of a shortcut run page-faulted back heap memory that malloc had returned
to the kernel while the cheap steps ran, 2k to 30k pages (about 2 us each) more than a full
step of a vanilla run, so the shortcut fell short of S* in proportion to its number of full
steps (the same share for every B). The table's ``faults`` column shows it stays at 0.
"""

from __future__ import annotations

import argparse

import torch

from accelerators.shortcut.cost import measure_cost, speedup_limit
from accelerators.shortcut.weights import default_weights_path, load_shortcut
from bench.compare import add_threads_argument
from bench.overhead import measure_loop_overhead, overhead_report
from bench.timing import keep_freed_memory, timing_threads

SHORTCUTS = ["shortcut:steps=16,budget=4", "shortcut:steps=16,budget=6", "shortcut:steps=16,budget=8"]
OTHERS = ["few-step:steps=4"]  # the fastest configuration of the default sweep
S_STAR_TARGET = 0.95


def run(args: argparse.Namespace) -> int:
    from bench.plugins import get_manager
    from bench.runner import resolve_device

    kept = keep_freed_memory()  # before anything is allocated: no configuration re-faults freed memory
    manager = get_manager()
    device = resolve_device(args.device)
    model = manager.make_base_model(args.model, device)
    with torch.no_grad(), timing_threads(args.threads):
        table = measure_loop_overhead(
            manager, model, args.accel or SHORTCUTS + OTHERS, args.batch_size, args.rounds, device, args.seed
        )
        net, _ = load_shortcut(default_weights_path(model.name), model)
        net.eval()
        cost = measure_cost(model, net, rows=2 * args.batch_size, replicates=args.cost_replicates)
    print(f"freed memory kept for reuse (glibc malloc, no trimming): {'yes' if kept else 'no (not glibc)'}")
    for line in overhead_report(table):
        print(line)
    c = cost["c_latency"]
    print(f"shortcut cost c = {c:.4f} of a base forward in latency ({cost['rows']} rows per call; "
          f"{cost['c_flops']:.4f} in FLOPs)")  # fmt: skip
    worst = 1.0
    for _, r in table.iterrows():
        if not r["spec"].startswith("shortcut:"):
            continue
        opts = dict(kv.split("=") for kv in r["spec"].split(":", 1)[1].split(","))
        if "variant" in opts:
            continue
        limit = (
            speedup_limit(int(opts["steps"]), int(opts["budget"]), c)
            * model.default_sampling.steps
            / int(opts["steps"])
        )
        share = r["speedup"] / limit
        worst = min(worst, share)
        print(f"{r['spec']}: measured {r['speedup']:.2f}x [{r['speedup_ci_low']:.2f}, {r['speedup_ci_high']:.2f}] "
              f"of S* = {limit:.2f}x: {100 * share:.0f} % (target >= {100 * S_STAR_TARGET:.0f} %)")  # fmt: skip
    print(f"shortcut: worst share of S* {100 * worst:.0f} % ({'meets' if worst >= S_STAR_TARGET else 'misses'} "
          f"the target >= {100 * S_STAR_TARGET:.0f} %)")  # fmt: skip
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="fashion", help="base model spec (default fashion)")
    parser.add_argument("--accel", action="append", metavar="SPEC",
                        help=f"configurations besides vanilla (default: {' '.join(SHORTCUTS + OTHERS)})")  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=25, help="images per timed batch (default 25, as the default run)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timed rounds (default 10)")
    parser.add_argument("--cost-replicates", type=int, default=7, help="timed calls per cost measurement")
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--seed", type=int, default=0)
    return parser
