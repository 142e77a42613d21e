"""``migm-bench shortcut cost``: the shortcut's per-call cost c as a fraction of one base forward.

Measured side by side in one process, on the same batch rows: FLOPs (torch's counter with
attention included, ``bench.flops``) and wall-clock latency of (a) one full base forward +
head (what a vanilla step of the loop runs), (b) one shortcut call + head (a shortcut step),
(c) the blocks alone and (d) the network alone (the paper's "1/20 of the base" compares
these), for the shipped weights of each variant (``accelerators.shortcut.step_cost``). The
calls are timed interleaved (a, b, c, d, then d, c, b, a, ...
``bench.timing.interleaved_replicates``) and c in latency is the median of the paired ratios
b_j / a_j (the network-only ratio: d_j / c_j), the way the loop's speed-ups are paired per
round, so load that drifts between replicates cancels instead of landing on one side; the
process keeps freed memory (``bench.timing.keep_freed_memory``), as the overhead benchmark does. Then, for the
B-of-N schedules asked for, the cost-model speed-up limit S* = N / (B + (N - B) * c) against
vanilla at N (Zhu et al., arXiv 2602.23996, Sec. 3 on the cost model; the paper reports
c ~ 1/24 for MaskGIT). On a base model
with a DiMOO-Shortcut weights file (``--model dimoo:checkpoint=DIR,...``) the measurement is
``accelerators.shortcut.dimoo_cost.measure_dimoo_cost``; the 8B model's real-shape fraction, with
no checkpoint, is ``migm-bench shortcut dimoo-cost``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from accelerators.shortcut.dimoo_model import DiMOOShortcutNet
from accelerators.shortcut.networks import load_network
from accelerators.shortcut.step_cost import StepCalls, measure_calls
from accelerators.shortcut.weights import VARIANT_SUFFIXES, default_weights_path
from bench.compare import add_threads_argument
from bench.forward import full_forward, logits_of
from bench.timing import keep_freed_memory, timing_threads


def speedup_limit(steps: int, budget: int, c: float) -> float:
    """S* = N / (B + (N - B) c): vanilla's N full steps over B full + (N - B) shortcut steps."""
    return steps / (budget + (steps - budget) * c)


@torch.no_grad()
def measure_cost(model, net, rows: int, replicates: int = 7) -> dict[str, float]:
    """FLOPs and median latency per call (per row) of a base forward and a shortcut call (+ head
    each), and of the blocks alone and the network alone, timed interleaved (``measure_calls``)."""
    if isinstance(net, DiMOOShortcutNet):
        from accelerators.shortcut.dimoo_cost import measure_dimoo_cost

        return measure_dimoo_cost(model, net, rows, replicates)
    g = torch.Generator().manual_seed(0)
    L, P, D = model.seq_len, model.num_image_tokens, model.dim
    k = max(1, round(P / model.default_sampling.steps))  # tokens revealed per step, on average
    tokens = torch.randint(0, model.codebook_size, (rows, P), generator=g)
    cond = model.conditions(rows, g)
    feats = torch.randn(rows, L, D, generator=g)
    ids = torch.randint(0, model.codebook_size, (rows, k), generator=g)
    pos = torch.stack([torch.randperm(P, generator=g)[:k] for _ in range(rows)])
    mask = torch.arange(P).expand(rows, P) >= P // 2  # (rows, P) True = still masked: half the tokens

    def blocks() -> torch.Tensor:
        return full_forward(model, tokens, cond)[0]

    def net_call() -> torch.Tensor:  # what a shortcut step runs before the head, its mask ratio included
        return net(feats, ids, pos, mask.float().mean(dim=1))

    calls = StepCalls(blocks, net_call, lambda f: logits_of(model, f))
    return {"rows": rows, "new_tokens": k, **measure_calls(calls, feats, rows, replicates)}


def default_out(spec: str, name: str) -> str:
    """Where the measurement goes: the default run's results for fashion (a committed file), else a
    folder of the model's own, so measuring another model never overwrites it."""
    return str(Path("results") / ("default" if spec == "fashion" else name) / "shortcut_cost.json")


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()  # as the overhead benchmark, whose S* this c gives
    with timing_threads(args.threads):  # as the runs it predicts
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from bench.plugins import get_manager

    model = get_manager().make_base_model(args.model, torch.device("cpu"))
    rows = []
    for variant in VARIANT_SUFFIXES:
        path = default_weights_path(model.name, variant)
        if not path.is_file():
            print(f"{variant}: no weights at {path}, skipped")
            continue
        net, _ = load_network(path, model)
        net.eval()
        res = {"variant": variant, **measure_cost(model, net, args.rows, args.replicates)}
        for spec in args.schedules:
            n, b = (int(x) for x in spec.split("/"))
            res[f"S*_N{n}_B{b}_flops"] = speedup_limit(n, b, res["c_flops"])
            res[f"S*_N{n}_B{b}_latency"] = speedup_limit(n, b, res["c_latency"])
        rows.append(res)
        print(f"{variant}: network alone {res['shortcut_flops'] - res['head_flops']:.4g} FLOPs/row vs base forward "
              f"{res['base_flops'] - res['head_flops']:.4g} (1/{1 / res['net_only_ratio_flops']:.1f}), "
              f"{res['net_latency_s'] * 1e3:.3f} vs {res['blocks_latency_s'] * 1e3:.3f} ms/row in latency "
              f"(1/{1 / res['net_only_ratio_latency']:.1f}); with the head each step needs:")  # fmt: skip
        print(f"{variant}: c = {res['c_flops']:.4f} of a base forward in FLOPs (1/{1 / res['c_flops']:.1f}), "
              f"{res['c_latency']:.4f} in latency (1/{1 / res['c_latency']:.1f}); "
              f"base {res['base_latency_s'] * 1e3:.2f} ms/row, shortcut {res['shortcut_latency_s'] * 1e3:.2f} ms/row")  # fmt: skip
    out = args.out if args.out is not None else default_out(args.model, model.name)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(rows, indent=1))
        print(f"wrote {out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", default="fashion", help="base model spec (default fashion)")
    parser.add_argument(
        "--rows", type=int, default=200, help="batch rows per call (default 200: 100 images x CFG)"
    )
    parser.add_argument("--replicates", type=int, default=7)
    add_threads_argument(parser)
    parser.add_argument("--schedules", nargs="*", default=["16/4", "16/6", "16/8", "32/6"],
                        help="N/B pairs to report S* for")  # fmt: skip
    parser.add_argument("--out", default=None, help="JSON file (default results/default/shortcut_cost.json for "
                                                     "fashion, else results/<model name>/shortcut_cost.json)")  # fmt: skip
    return parser
