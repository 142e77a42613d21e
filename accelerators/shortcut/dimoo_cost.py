"""DiMOO-Shortcut's per-call cost c as a fraction of one Lumina-DiMOO forward.

Two ways:

* ``measure_dimoo_cost(model, net, rows)``: on a loaded base model and trained network (what
  ``migm-bench shortcut cost --model dimoo:...`` reports): FLOPs (``bench.flops``) and median
  latency of one full forward of both CFG streams + the image head against one shortcut step
  (key tokens embedded, the network on both streams, the head), at the model's real layout;
* ``real_shape_cost()``: the 8B model's shapes on the meta device, no weights
  (``migm-bench shortcut dimoo-cost``): Lumina-DiMOO's transformer is LLaDA-8B's (32 "llama"
  blocks of width 4096, 32 heads, MLP 12288, GSAI-ML/LLaDA-8B ``config.json``) and its images are
  8192-code aMUSEd-VQ grids of (H/16) x (W/16) tokens with a newline after each row; the
  shortcut is the reference's (``DiMOOShortcutConfig()``: ``infer.py`` / ``train_shortcut.py``
  defaults, bottleneck 2, one block pair). A full-width ``ShortcutLLaDABlock`` is a LLaDA block
  (same projections, rotary, SwiGLU), so it stands for a base block here.

Per CFG step both streams run: the conditional one (prompt of T tokens, then BOA, BOI, the image
rows, EOI, EOA) and the unconditional one (the 14-token "<uncondition>" prompt). The shortcut's
keys per stream: the K = P / N tokens a step reveals on average, plus the T prompt tokens in the
conditional stream (``generate_image_shortcut``). Both sides include the image head (P rows x the
codebook), which a shortcut step still needs.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from accelerators.shortcut.dimoo_inputs import predict_step
from accelerators.shortcut.dimoo_model import (
    DiMOOShortcutConfig,
    DiMOOShortcutNet,
    ShortcutLLaDABlock,
    call_flops,
)
from accelerators.shortcut.model import model_device
from accelerators.shortcut.step_cost import StepCalls, measure_calls
from bench.flops import count_flops
from bench.forward import full_forward, layout_of, logits_of
from bench.protocol import BaseModel

# Lumina-DiMOO 8B (checked against base_models.dimoo.flops / text in tests/test_shortcut_dimoo.py)
LAYERS = 32  # LLaDA-8B n_layers
CODEBOOK = 8192  # aMUSEd-VQ codes
UNCOND_PROMPT_TOKENS = 14  # "<system>...</system><user><uncondition></user>", tokenised
SPECIALS = 4  # BOA, BOI, EOI, EOA


# ------------------------------------------------------------------------ a loaded model
@torch.no_grad()
def measure_dimoo_cost(model: BaseModel, net: DiMOOShortcutNet, rows: int, replicates: int = 7) -> dict:
    """FLOPs and median latency per row of a base forward and a shortcut step (+ head each), and of
    the blocks and the network alone, timed interleaved (``step_cost.measure_calls``), on ``rows``
    stacked rows of the model's CFG streams (rows / 2 images with guidance); same keys as
    ``accelerators.shortcut.cost.measure_cost``."""
    settings = model.default_sampling
    streams = 2 if settings.cfg_weight != 0 else 1
    g = torch.Generator().manual_seed(0)
    device = model_device(model)
    cond = model.conditions(max(1, rows // streams), g)
    cond = torch.cat([cond, model.null_conditions(cond)]) if streams == 2 else cond  # (B,)
    layout = layout_of(model, cond)
    B, P, V = cond.shape[0], model.num_image_tokens, model.codebook_size
    k = max(1, round(P / settings.steps))  # tokens revealed per step, on average
    tokens = torch.randint(0, V, (B, P), generator=g).to(device)
    revealed = torch.zeros(B, P, dtype=torch.bool)
    revealed = revealed.scatter(1, torch.stack([torch.randperm(P, generator=g)[:k] for _ in range(B)]), True)
    revealed = revealed.to(device)
    feats = full_forward(model, tokens, cond, layout)[0]  # (B, L, D): real features in the model's dtype
    t = torch.full((B,), 0.5, device=device)

    def blocks() -> torch.Tensor:
        return full_forward(model, tokens, cond, layout)[0]

    def net_call() -> torch.Tensor:  # key tokens embedded + the network on both streams
        return predict_step(net, model, layout, feats, tokens, cond, revealed, t)

    calls = StepCalls(blocks, net_call, lambda f: logits_of(model, f, layout))
    return {"rows": B, "new_tokens": k, **measure_calls(calls, feats, B, replicates, device)}


# ------------------------------------------------------------------------ real shapes
def stream_length(prompt_tokens: int, height: int, width: int) -> int:
    """L of one stream: prompt + BOA, BOI + rows x (cols + newline) + EOI, EOA."""
    rows, cols = height // 16, width // 16
    return prompt_tokens + SPECIALS + rows * (cols + 1)


@torch.no_grad()
def base_forward_flops(config: DiMOOShortcutConfig, seq_len: int, image_tokens: int,
                       layers: int = LAYERS, codebook: int = CODEBOOK) -> tuple[int, int]:  # fmt: skip
    """(blocks, head) FLOPs of one base forward of one stream, on the meta device: ``layers``
    full-width LLaDA blocks over ``seq_len`` rows, and the head's image-code rows on the P image
    rows (the harness's ``model.head``)."""
    width = dataclasses.replace(config, bottleneck_ratio=1)  # d = D: a base LLaDA block
    with torch.device("meta"):
        block = ShortcutLLaDABlock(width).eval()
        h = torch.empty(1, seq_len, config.base_dim)
        pos = torch.empty(1, seq_len, dtype=torch.long)
        feats = torch.empty(1, image_tokens, config.base_dim)
        head = torch.empty(codebook, config.base_dim)
        blocks = layers * count_flops(lambda: block(h, pos))
        return blocks, count_flops(lambda: F.linear(feats, head))


def real_shape_cost(
    prompt_tokens: int = 64,
    height: int = 1024,
    width: int = 1024,
    steps: int = 64,
    config: DiMOOShortcutConfig | None = None,
    uncond_tokens: int = UNCOND_PROMPT_TOKENS,
) -> dict:
    """Per-call cost of DiMOO-Shortcut as a fraction of a Lumina-DiMOO 8B forward in FLOPs (both CFG
    streams, head included on both sides; ``prompt_tokens`` = the conditional prompt with its chat
    template). ``c_flops`` is the number the cost model S* = N / (B + (N - B) c) takes;
    ``network_vs_blocks`` the network alone against the base blocks alone."""
    config = config or DiMOOShortcutConfig()
    p = (height // 16) * (width // 16)
    new = max(1, p // steps)
    total = {"base_blocks": 0, "head": 0, "shortcut": 0}
    for prompt, keys in ((prompt_tokens, new + prompt_tokens), (uncond_tokens, new)):
        seq = stream_length(prompt, height, width)
        blocks, head = base_forward_flops(config, seq, p)
        total["base_blocks"] += blocks
        total["head"] += head
        total["shortcut"] += call_flops(config, seq, keys)
    base, step = total["base_blocks"] + total["head"], total["shortcut"] + total["head"]
    return {
        "prompt_tokens": prompt_tokens, "seq_len_cond": stream_length(prompt_tokens, height, width),
        "seq_len_uncond": stream_length(uncond_tokens, height, width), "image_tokens": p, "new_tokens": new,
        **total, "base_forward": base, "shortcut_step": step, "c_flops": step / base,
        "network_vs_blocks": total["shortcut"] / total["base_blocks"],
    }  # fmt: skip


def speedup_limit(steps: int, budget: int, c: float) -> float:
    """S* = N / (B + (N - B) c) (``accelerators.shortcut.cost.speedup_limit``)."""
    return steps / (budget + (steps - budget) * c)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[32, 64, 128, 256],
                        help="conditional prompt lengths in tokens, chat template included")  # fmt: skip
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=64, help="N (Lumina-DiMOO's 64)")
    parser.add_argument("--budgets", type=int, nargs="*", default=[14, 11, 9], help="B for the S* column")
    return parser


def run(args: argparse.Namespace) -> int:
    print(f"DiMOO-Shortcut (bottleneck 2, 1 block pair) vs Lumina-DiMOO 8B, {args.height}x{args.width}, "
          f"N = {args.steps}, both CFG streams, image head on both sides (FLOPs, meta device):")  # fmt: skip
    for tokens in args.prompt_tokens:
        r = real_shape_cost(tokens, args.height, args.width, args.steps)
        limits = ", ".join(f"B={b}: {speedup_limit(args.steps, b, r['c_flops']):.2f}x" for b in args.budgets)
        print(f"prompt {tokens:4d} tokens (L = {r['seq_len_cond']}): c = {r['c_flops']:.4f} (1/{1 / r['c_flops']:.1f}) "
              f"of a base forward; network alone {r['network_vs_blocks']:.4f} of the blocks; S* {limits}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m accelerators.shortcut.dimoo_cost",
                                                   description=__doc__.splitlines()[0]))  # fmt: skip
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
