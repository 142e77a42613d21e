"""The contracts every accelerator and every base model keep, as plain checks.

Each check is a function that returns quietly (or with a short note) when the plugin keeps
its part of ``bench.protocol`` and raises ``ContractError`` (an ``AssertionError``) saying
what failed otherwise. They ship with the package so that ``migm-bench check NAME``
(``bench.check``) runs them on any installed plugin, and ``tests/test_contract.py`` runs
them over the built-ins. In the spirit of diffusers' cache contract tests
(``tests/models/testing_utils/cache.py``): repeatable outputs, state reset between runs,
no NaNs.

A check lets ``FileNotFoundError`` through untouched: the convention for "a weights file
this configuration needs does not exist for this base model", which callers report as
skipped rather than failed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bench.forward import (
    block_attend,
    block_qkv,
    condition_index,
    full_forward,
    gather_positions,
    image_index,
    layout_of,
    logits_of,
    partial_forward,
    to_sequence,
)
from bench.protocol import (
    Accelerator,
    AcceleratorWrapper,
    BaseModel,
    Counts,
    SamplingSettings,
    StepContext,
    StepOutput,
)
from bench.sampling import SampleResult, sample

N_IMAGES = 2  # images per contract run: enough for a batch, small enough for seconds on a CPU


class ContractError(AssertionError):
    """A plugin broke its contract; the message says which part and how."""


def require(condition: Any, message: str) -> None:
    """Raise ``ContractError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ContractError(message)


HALF_PRECISION_TOL = 5e-2  # bfloat16 / float16 models (Lumina-DiMOO on a GPU): 8 mantissa bits


def require_close(actual: Tensor, expected: Tensor, what: str, tol: float | None = None) -> None:
    """``actual`` equals ``expected`` up to ``tol`` (absolute and relative), else ContractError.
    tol None: 1e-4, or ``HALF_PRECISION_TOL`` when ``expected`` is in half precision (a partial
    forward's matmuls have other shapes than a full one's, so their rounding differs)."""
    if tol is None:
        tol = HALF_PRECISION_TOL if expected.dtype in (torch.bfloat16, torch.float16) else 1e-4
    try:
        torch.testing.assert_close(actual.float(), expected.float(), atol=tol, rtol=tol)
    except AssertionError as err:
        first = str(err).strip().splitlines()[0]
        raise ContractError(f"{what}: {first}") from None


# ------------------------------------------------------------------ accelerators
class CheckedAccelerator(AcceleratorWrapper):
    """Wraps an accelerator and checks every StepOutput it returns: logits (B, P, V) and
    features (B, L, D) if any, all finite."""

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        out = self.inner.step(model, ctx)
        rows = ctx.tokens.shape[0]
        where = f"step {ctx.step}/{ctx.num_steps}"
        want = (rows, model.num_image_tokens, model.codebook_size)
        require(
            tuple(out.logits.shape) == want,
            f"{where}: logits of shape {tuple(out.logits.shape)}, want {want}",
        )
        require(torch.isfinite(out.logits).all(), f"{where}: non-finite logits")
        if out.features is not None:
            want = (rows, model.seq_len, model.dim)
            got = tuple(out.features.shape)
            require(got == want, f"{where}: features of shape {got}, want {want}")
            require(torch.isfinite(out.features).all(), f"{where}: non-finite features")
        return out


def run_checked(
    model: BaseModel,
    accelerator: Accelerator,
    seed: int,
    settings: SamplingSettings,
    n_images: int = N_IMAGES,
) -> SampleResult:
    """Sample ``n_images`` with ``accelerator`` (every step's output checked) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    cond = model.conditions(n_images, g)
    checked = accelerator if isinstance(accelerator, CheckedAccelerator) else CheckedAccelerator(accelerator)
    return sample(model, checked, cond, g, settings)


def _same_run(a: SampleResult, b: SampleResult) -> bool:
    return torch.equal(a.tokens, b.tokens) and torch.equal(a.reveal_step, b.reveal_step)


def check_same_seed_gives_identical_tokens(
    model: BaseModel, build: Callable[[], Accelerator], settings: SamplingSettings
) -> None:
    """Two fresh instances, one seed: identical tokens and reveal order."""
    a = run_checked(model, build(), 11, settings)
    b = run_checked(model, build(), 11, settings)
    require(_same_run(a, b), "two fresh instances gave different tokens for the same seed")


def check_reset_makes_runs_repeatable(
    model: BaseModel, build: Callable[[], Accelerator], settings: SamplingSettings
) -> None:
    """One instance reused across seeds: ``reset`` clears every state, counts included."""
    acc = CheckedAccelerator(build())
    first = run_checked(model, acc, 0, settings)
    first_counts = dataclasses.asdict(acc.counts)
    run_checked(model, acc, 1, settings)  # leave other state behind
    again = run_checked(model, acc, 0, settings)
    require(_same_run(first, again), "after reset, the same seed gave other tokens (state survives reset)")
    counts = dataclasses.asdict(acc.counts)
    require(
        counts == first_counts,
        f"counts do not restart at reset: {first_counts} the first time, {counts} later",
    )


def check_counts_are_sane(
    model: BaseModel, build: Callable[[], Accelerator], settings: SamplingSettings, max_full_forwards: int
) -> None:
    """Full forwards never above vanilla's (``max_full_forwards``, one per step at the reference
    N), nothing negative, partial coverage in [0, 1], and something computed the logits."""
    acc = build()
    run_checked(model, acc, 0, settings)
    c: Counts = acc.counts
    require(
        0 <= c.full_forwards <= max_full_forwards,
        f"{c.full_forwards} full forwards, vanilla does {max_full_forwards}",
    )
    require(c.partial_forwards >= 0 and c.other_calls >= 0, f"negative counts: {c}")
    require(
        0.0 <= c.partial_positions <= c.partial_forwards,
        f"partial_positions outside [0, partial_forwards]: {c}",
    )
    require(0.0 <= c.as_dict()["partial_coverage"] <= 1.0, f"partial coverage outside [0, 1]: {c}")
    require(c.full_forwards + c.partial_forwards + c.other_calls >= 1, f"no model call counted: {c}")


def check_finite_logits_and_valid_tokens(
    model: BaseModel, build: Callable[[], Accelerator], settings: SamplingSettings
) -> None:
    """Finite outputs of the right shapes at every step; final tokens in [0, V); every token
    revealed at a step in [0, N)."""
    res = run_checked(model, build(), 5, settings)
    want = (N_IMAGES, model.num_image_tokens)
    require(tuple(res.tokens.shape) == want, f"final tokens of shape {tuple(res.tokens.shape)}, want {want}")
    require(((res.tokens >= 0) & (res.tokens < model.codebook_size)).all(), "final tokens outside [0, V)")
    require(((res.reveal_step >= 0) & (res.reveal_step < res.steps)).all(), "a token was never revealed")


def check_steps_zero_is_the_default(build_with: Callable[[dict[str, Any]], Accelerator]) -> str | None:
    """The ``steps=0`` convention: an accelerator whose config has a ``steps`` option and
    accepts 0 runs the base model's default N (``num_steps(d) == d``). Refusing 0 is fine
    (e.g. few-step, where N is the whole point); a note says so."""
    try:
        acc = build_with({"steps": 0})
    except (TypeError, ValueError) as err:  # no steps option, or 0 refused
        return f"not applicable ({type(err).__name__}: {err})"
    for default in (6, 16):
        got = acc.num_steps(default)
        require(
            got == default, f"steps=0 gave num_steps({default}) = {got}; 0 must mean the model's default N"
        )
    return None


# ------------------------------------------------------------------- base models
def _half_masked_batch(model: BaseModel, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """(n, P) random codes with about half of them masked, and (n,) conditions; the last row's
    condition is the null one."""
    g = torch.Generator().manual_seed(seed)
    cond = model.conditions(n, g)
    device = cond.device
    tokens = torch.randint(0, model.codebook_size, (n, model.num_image_tokens), generator=g).to(device)
    masked = (torch.rand(tokens.shape, generator=g) < 0.5).to(device)
    tokens = tokens.masked_fill(masked, model.mask_id)
    cond = torch.cat([cond[:-1], model.null_conditions(cond[-1:])])
    return tokens, cond


def check_base_model_shapes(model: BaseModel) -> None:
    """Sizes that agree: P <= L, V >= 2, a mask id outside the codes [0, V), some blocks, and a
    default N in [1, P]."""
    P, L, V = model.num_image_tokens, model.seq_len, model.codebook_size
    require(
        isinstance(model.name, str) and model.name, f"name must be a non-empty string, got {model.name!r}"
    )
    require(0 < P <= L, f"num_image_tokens P={P} must be in [1, seq_len={L}]")
    require(V >= 2 and model.dim >= 1, f"codebook_size V={V} and dim D={model.dim} must be positive")
    require(not 0 <= model.mask_id < V, f"mask_id {model.mask_id} is one of the V={V} codes")
    require(len(model.blocks) >= 1, "no transformer blocks")
    steps = model.default_sampling.steps
    require(1 <= steps <= P, f"default_sampling.steps N={steps} must be in [1, P={P}]")


def check_conditions_and_start(model: BaseModel) -> None:
    """``conditions`` draws from the generator (same seed, same conditions), the null
    conditions have their shape, and the start is the all-mask (n, P) grid."""
    a = model.conditions(3, torch.Generator().manual_seed(0))
    b = model.conditions(3, torch.Generator().manual_seed(0))
    require(a.shape[0] == 3, f"conditions(3, g) returned {a.shape[0]} conditions")
    require(torch.equal(a, b), "conditions(n, g) differ for the same seed (randomness outside the generator)")
    null = model.null_conditions(a)
    require(
        null.shape == a.shape, f"null_conditions changed the shape {tuple(a.shape)} -> {tuple(null.shape)}"
    )
    start = model.initial_tokens(3)
    require(
        tuple(start.shape) == (3, model.num_image_tokens), f"initial_tokens(3) has shape {tuple(start.shape)}"
    )
    require(
        start.dtype == torch.long and (start == model.mask_id).all(),
        "initial_tokens must be all mask_id (long)",
    )


@torch.no_grad()
def check_blocks(model: BaseModel) -> None:
    """Every block's primitives on the first Q image tokens of a batch (their positions in the
    batch's layout): q (B, H, Q, Dh), k and v (B, Hkv, Q, Dh) with Hkv dividing H (GQA);
    ``value`` equals qkv's v; ``attend`` over those keys and ``mlp`` give (B, Q, D)."""
    tokens, cond = _half_masked_batch(model, 2, seed=0)
    layout = layout_of(model, cond)
    Q = min(5, model.num_image_tokens)
    positions = image_index(layout, 2, tokens.device)[:, :Q]  # (2, Q) sequence positions, real tokens
    h = gather_positions(model.embed(tokens, cond), positions)  # (2, Q, D), in the model's dtype
    keys = layout if layout.key_mask is None else dataclasses.replace(
        layout, key_mask=torch.gather(layout.key_mask, 1, positions))  # fmt: skip
    for i, block in enumerate(model.blocks):
        q, k, v = block_qkv(block, h, layout, positions)
        H = block.num_heads
        want = (2, H, Q, model.dim // H)
        require(tuple(q.shape) == want, f"block {i}: qkv's q has shape {tuple(q.shape)}, want {want}")
        for name, t in (("k", k), ("v", v)):
            kv_heads = t.shape[1]
            require(
                t.dim() == 4 and H % kv_heads == 0 and tuple(t.shape) == (2, kv_heads, Q, model.dim // H),
                f"block {i}: qkv's {name} has shape {tuple(t.shape)}, want {want} or fewer heads dividing {H}",
            )
        require_close(block.value(h), v, f"block {i}: value(h) differs from qkv(h)'s v")
        outputs = (("attend", block_attend(block, q, k, v, keys)), ("mlp", block.mlp(h)))
        for name, out in outputs:
            require(tuple(out.shape) == (2, Q, model.dim), f"block {i}: {name} has shape {tuple(out.shape)}")


@torch.no_grad()
def check_full_forward(model: BaseModel) -> None:
    """The full forward over the block protocol: features (B, L, D), logits (B, P, V), finite,
    and the null condition changes the output."""
    tokens, cond = _half_masked_batch(model, 3, seed=1)
    feats, caches = full_forward(model, tokens, cond)
    require(tuple(feats.shape) == (3, model.seq_len, model.dim), f"features of shape {tuple(feats.shape)}")
    require(len(caches) == len(model.blocks), "one K/V cache per block")
    logits = logits_of(model, feats, layout_of(model, cond))
    want = (3, model.num_image_tokens, model.codebook_size)
    require(tuple(logits.shape) == want, f"logits of shape {tuple(logits.shape)}, want {want}")
    require(torch.isfinite(feats).all() and torch.isfinite(logits).all(), "non-finite features or logits")
    real = model.conditions(1, torch.Generator().manual_seed(5))  # the last row's tokens, a real condition
    require(
        not torch.allclose(full_forward(model, tokens[-1:], real)[0], feats[-1:], atol=1e-3),
        "the null condition gives the features of a real one (guidance would change nothing)",
    )
    ids = torch.randint(0, model.codebook_size, (3, 4), generator=torch.Generator().manual_seed(0)).to(
        tokens.device
    )
    emb = model.embed_tokens(ids, torch.arange(4, device=tokens.device).expand(3, -1))
    require(
        tuple(emb.shape) == (3, 4, model.dim), f"embed_tokens of shape {tuple(emb.shape)}, want (3, 4, D)"
    )


@torch.no_grad()
def check_partial_forward(model: BaseModel) -> None:
    """A partial forward over all positions, on stale caches, equals the full forward; on a
    subset (image tokens and the last condition position, in the batch's layout) it gives the
    full forward's features there, and ``head`` on those image positions gives the full logits
    there (what every cache accelerator relies on)."""
    tokens, cond = _half_masked_batch(model, 2, seed=2)
    layout = layout_of(model, cond)
    feats, caches = full_forward(model, tokens, cond, layout)
    _, stale = full_forward(model, *_half_masked_batch(model, 2, seed=3))
    every = torch.arange(model.seq_len, device=tokens.device).expand(2, -1)  # sequence positions
    require_close(
        partial_forward(model, tokens, cond, every, stale, layout), feats, "partial forward on every position"
    )
    P = model.num_image_tokens
    picks = torch.randperm(P, generator=torch.Generator().manual_seed(0))[: min(4, P)]
    image_pos = torch.stack([picks.sort().values, picks.flip(0)]).to(tokens.device)  # (2, Q) per-row subsets
    last_condition = condition_index(layout, 2, tokens.device)[:, -1:]  # (2, 1), a real token in any layout
    positions = torch.cat([to_sequence(layout, image_pos), last_condition], 1)  # (2, Q + 1) in the sequence
    sub = partial_forward(model, tokens, cond, positions, caches, layout)
    require_close(sub, gather_positions(feats, positions), "partial forward on a subset")
    require_close(model.head(sub[:, : image_pos.shape[1]], image_pos),
                  gather_positions(logits_of(model, feats, layout), image_pos),
                  "head on a subset of image positions")  # fmt: skip


@torch.no_grad()
def check_decode(model: BaseModel) -> None:
    """``decode``: (n, P) tokens -> (n, C, H, W) images in [0, 1]."""
    tokens = torch.randint(
        0, model.codebook_size, (2, model.num_image_tokens), generator=torch.Generator().manual_seed(0)
    )
    images = model.decode(tokens.to(model.initial_tokens(1).device))
    require(
        images.dim() == 4 and images.shape[0] == 2,
        f"decode gave shape {tuple(images.shape)}, want (2, C, H, W)",
    )
    require(
        torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1,
        "decoded images outside [0, 1]",
    )


def check_fingerprint(model: BaseModel) -> None:
    """A non-empty string, the same on every call."""
    first = model.fingerprint()
    require(isinstance(first, str) and first, f"fingerprint() must be a non-empty string, got {first!r}")
    require(model.fingerprint() == first, "fingerprint() changes between calls")


class _FullSteps:
    """The plainest accelerator: a full forward at every step (the base-model checks' own, so
    they need no accelerator plugin)."""

    def __init__(self) -> None:
        self.config, self.counts = None, Counts()

    def num_steps(self, default_steps: int) -> int:
        return default_steps

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        self.counts = Counts()

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        layout = layout_of(model, ctx.cond)
        features, _ = full_forward(model, ctx.tokens, ctx.cond, layout)  # (B, L, D)
        self.counts.full_forwards += 1
        return StepOutput(logits=logits_of(model, features, layout), features=features)


def check_sampling(model: BaseModel) -> None:
    """The generic loop at the model's default settings: repeatable for one seed, every step's
    output well formed, final tokens in [0, V)."""
    settings = model.default_sampling
    check_same_seed_gives_identical_tokens(model, _FullSteps, settings)
    check_finite_logits_and_valid_tokens(model, _FullSteps, settings)


BASE_MODEL_CHECKS: tuple[tuple[str, Callable[[BaseModel], str | None]], ...] = (
    ("sizes agree", check_base_model_shapes),
    ("conditions and start tokens", check_conditions_and_start),
    ("block primitives", check_blocks),
    ("full forward", check_full_forward),
    ("partial forward equals full forward", check_partial_forward),
    ("decode to images in [0, 1]", check_decode),
    ("stable fingerprint", check_fingerprint),
    ("sampling is repeatable", check_sampling),
)
