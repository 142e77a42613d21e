"""The one generic sampling loop every base model and accelerator goes through.

Semantics follow MaskGIT-pytorch v1 (llvictorll/Maskgit-pytorch, ``Trainer/vit.py``,
``MaskGIT.sample`` and ``adap_sche``): an arccos/cosine/linear schedule of how many
tokens to reveal per step, classifier-free guidance ``(1 + w') l_c - w' l_u`` with
``w' = w * i / (N - 1)``, token sampling from the softmax, and confidence-based reveal
with Gumbel noise of scale ``r_temp * (1 - i / (N - 1))`` (0 at the last step), as in the
version MIGM-Shortcut vendors (``MaskGIT-Shortcut/Trainer/vit.py``). The Halton reveal
order (Halton-MaskGIT, ``Sampler/halton_sampler.py``) is the alternative policy.

Logits cover the V image codes only, as in MIGM-Shortcut's MaskGIT: its
``MaskTransformer.forward`` (``MaskGIT-Shortcut/Network/transformer.py``) returns
``logit[:, :P, :codebook_size]``, slicing off the [MASK] (and class) logits before the
sampler's softmax. Known difference: ``temperature`` divides the logits where the
reference's ``sm_temp`` multiplies them (``temperature = 1 / sm_temp``; both default to 1).

All randomness comes from the ``torch.Generator`` passed in: same seed, same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bench.protocol import Accelerator, BaseModel, SamplerPolicy, SamplingSettings, StepContext, StepOutput


# ------------------------------------------------------------------- schedules
def reveal_schedule(num_tokens: int, steps: int, mode: str = "arccos") -> list[int]:
    """How many tokens each of the ``steps`` steps reveals (sums to num_tokens).

    MaskGIT-pytorch ``adap_sche``: r = linspace(1, 0, N); the mask ratio curve is
    normalised to sum to the number of tokens, rounded, at least 1 per step, and the
    last step takes the remainder. Computed in float32 like the reference, so exact
    .5 ties (e.g. P=49, N=8, linear) round the same way. Where the reference's last
    entry would drop below 1 (N close to P), tokens are moved back from the largest step.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps > num_tokens:
        raise ValueError(f"steps ({steps}) cannot exceed the number of tokens ({num_tokens})")
    r = torch.linspace(1, 0, steps, dtype=torch.float32)  # the reference's default dtype
    if mode == "arccos":
        val = torch.arccos(r) / (math.pi * 0.5)
    elif mode == "cosine":
        val = torch.cos(r * math.pi * 0.5)
    elif mode == "linear":
        val = 1 - r
    else:
        raise ValueError(f"unknown mask schedule {mode!r}; choose arccos, cosine or linear")
    if steps == 1:
        return [num_tokens]
    sched = (val / val.sum() * num_tokens).round()
    sched[sched == 0] = 1
    sched[-1] += num_tokens - sched.sum()
    out = [int(x) for x in sched.tolist()]
    # rounding can overshoot so the last entry drops below 1: take tokens back from the largest
    while out[-1] < 1:
        j = max(range(steps - 1), key=lambda i: out[i])
        out[j] -= 1
        out[-1] += 1
    return out


def cfg_weight_at(settings: SamplingSettings, step: int, steps: int) -> float:
    """Guidance weight at ``step``: linear ramp 0 -> w (MaskGIT-pytorch) or constant."""
    if settings.cfg_schedule == "constant":
        return settings.cfg_weight
    if settings.cfg_schedule == "linear":
        return settings.cfg_weight * (step / (steps - 1) if steps > 1 else 1.0)
    raise ValueError(f"unknown cfg_schedule {settings.cfg_schedule!r}; choose linear or constant")


def halton_sequence(n: int, base: int) -> Tensor:
    """First n points of the 1-D van der Corput sequence in ``base`` (skipping 0)."""
    out = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        f, r, k = 1.0, 0.0, i + 1
        while k > 0:
            f /= base
            r += f * (k % base)
            k //= base
        out[i] = r
    return out


def _halton_cell(k: int, base: int, side: int) -> int:
    """floor(side * x) for x the k-th (k >= 1) van der Corput point in ``base``, exactly."""
    num, den = 0, 1
    while k > 0:  # x = num / den, built digit by digit (reversed base-b digits of k)
        num, den = num * base + k % base, den * base
        k //= base
    return num * side // den


def halton_order(side: int) -> Tensor:
    """Reveal order of a side x side grid from the 2-D Halton sequence (bases 2, 3).

    Halton-MaskGIT ``build_halton_mask`` (valeoai/Maskgit-pytorch,
    ``Sampler/halton_sampler.py``): walk the Halton points (first point 1/b, not 0),
    map each to a grid cell, keep first visits until every cell is covered. As there,
    the base-2 coordinate picks the *row* and the base-3 one the column of the
    row-major (side, side) token grid. Cells are found with exact integer arithmetic
    (floor(n * side / d) for the point n / d). Returns (side*side,) flat positions in
    reveal order.
    """
    seen: list[int] = []
    seen_set: set[int] = set()
    n = side * side
    k = 0
    while len(seen) < n:
        k += 1
        row, col = _halton_cell(k, 2, side), _halton_cell(k, 3, side)
        p = row * side + col
        if p not in seen_set:
            seen_set.add(p)
            seen.append(p)
    return torch.tensor(seen[:n], dtype=torch.long)


# ------------------------------------------------------------------------ loop
@dataclass
class SampleResult:
    """tokens: (n, P) final tokens. reveal_step: (n, P) step at which each token was
    revealed. features: per step (2n or n, L, D) last-layer features the step produced
    (only when ``record_features``), streams stacked as the model saw them.
    final_features: (2n or n, L, D) the last step's features exactly as the accelerator
    returned them (no copy; conditional stream first), None if it returns none."""

    tokens: Tensor
    reveal_step: Tensor
    steps: int
    features: list[Tensor] = field(default_factory=list)
    final_features: Tensor | None = None


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator, device) -> Tensor:
    """Standard Gumbel noise -log(-log(u)), u ~ U(0, 1), drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0)
    return -torch.log((-torch.log(u)).clamp_min(1e-20))


def sample_categorical(logp: Tensor, generator: torch.Generator) -> Tensor:
    """One draw per row of the categorical exp(logp): (..., V) log-probabilities -> (...) ids.

    The exponential race, exactly the algorithm of ``torch.multinomial`` for one sample on a
    CPU (the references' ``Categorical(probs).sample()``): id = argmax_v p_v / E_v with
    E_v = -log(u_v) ~ Exp(1), one uniform per code, so P(id = v) = p_v and a code of
    probability 0 is never drawn. It is the Gumbel-max trick in another form, and it couples
    the draws of two nearby distributions under the same uniforms far better than an inverse
    CDF does (a small change of p rarely changes the argmax, whereas it shifts every later CDF
    boundary), which is what the paired metrics against vanilla rely on. All randomness comes
    from ``generator``.
    """
    u = torch.rand(logp.shape, generator=generator, device=logp.device, dtype=logp.dtype)
    race = logp.exp().div_(u.clamp_min_(1e-38).log_().neg_())  # p_v / E_v, (..., V)
    return race.argmax(-1)


class MaskGITPolicy:
    """MaskGIT-pytorch's sampler (the default ``SamplerPolicy``): the ``mask_schedule`` reveal
    counts, tokens drawn from softmax(logits / temperature) by the exponential race, reveal
    scores log p(drawn) + gumbel_temperature * (1 - i / (N - 1)) * Gumbel noise over all P
    positions (revealed ones at -inf). One ``torch.Generator`` for the whole batch."""

    def __init__(self, settings: SamplingSettings) -> None:
        self.settings = settings

    def schedule(self, num_tokens: int, steps: int) -> list[int]:
        return reveal_schedule(num_tokens, steps, self.settings.mask_schedule)

    def draw(self, logits: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        _single_generator(generator)
        t = self.settings.temperature
        logp = torch.log_softmax(logits if t == 1 else logits / t, dim=-1)  # (n, m, V); x / 1 == x exactly
        drawn = sample_categorical(logp, generator)  # (n, m), exponential race over the V codes
        return drawn, torch.gather(logp, 2, drawn[..., None]).squeeze(-1)  # log p(drawn) (n, m)

    def scores(self, log_conf: Tensor, masked: Tensor, mask: Tensor, step: int, steps: int,
               generator: torch.Generator) -> Tensor:  # fmt: skip
        n, P = mask.shape
        conf = torch.full((n, P), -math.inf, device=mask.device)  # revealed positions: never chosen
        conf = conf.scatter(1, masked, log_conf)
        ratio = step / (steps - 1) if steps > 1 else 0.0  # MaskGIT-pytorch: indice / (len - 1)
        noise = gumbel_noise((n, P), generator, mask.device)
        conf = conf + self.settings.gumbel_temperature * (1 - ratio) * noise
        return conf.masked_fill(~mask, -math.inf)  # never re-reveal a token


def _single_generator(generator: object) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError("the MaskGIT sampler draws from one torch.Generator, not one per image")


def sampler_policy(model: BaseModel, settings: SamplingSettings) -> SamplerPolicy:
    """The model's ``sampler_policy(settings)`` when it has one, else MaskGIT-pytorch's."""
    fn = getattr(model, "sampler_policy", None)
    return MaskGITPolicy(settings) if fn is None else fn(settings)


def _at_positions(logits: Tensor, positions: Tensor) -> Tensor:
    """(n, P, V) logits, (n, m) positions -> (n, m, V) the logits at those positions.

    Row indexing copies whole V-vectors; ``torch.gather`` with the index expanded to (n, m, V)
    returns the same values but reads one int64 index per logit, about twice the time on a CPU."""
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]  # (n, 1)
    return logits[rows, positions]


def _reserved_count(reserve_steps: int, reserved: Tensor | None, schedule: list[int], step: int) -> int:
    """How many positions step ``step`` must reserve for ``StepOutput.reserve_steps``."""
    if reserve_steps == 0:
        return 0
    if reserve_steps < 0 or step + reserve_steps >= len(schedule):
        raise ValueError(
            f"step {step}: reserve_steps={reserve_steps} must be >= 0 and stay within the "
            f"{len(schedule)} steps"
        )
    if reserved is not None:
        raise ValueError(f"step {step}: cannot reserve positions while earlier reserved ones remain")
    return sum(schedule[step + 1 : step + 1 + reserve_steps])


@torch.no_grad()
def sample(
    model: BaseModel,
    accelerator: Accelerator,
    cond: Tensor,
    generator: torch.Generator | Sequence[torch.Generator],
    settings: SamplingSettings | None = None,
    record_features: bool = False,
    on_step: Callable[[int, StepOutput], None] | None = None,
) -> SampleResult:
    """Generate len(cond) images' tokens with ``accelerator`` producing every step's logits.

    cond: (n,) conditions. The accelerator sees the stacked batch [cond; null] when
    cfg_weight != 0 (B = 2n rows), else B = n. ``on_step(i, out)`` (optional) observes each
    step's output as soon as the accelerator returns it, before the loop uses it (the
    runner's NaN watch); it must not change ``out``. How tokens are drawn and ranked is the
    model's ``SamplerPolicy`` (``sampler_policy``); ``generator`` goes to it as given (one
    generator, or one per image for a policy that supports that).
    """
    settings = settings or model.default_sampling
    n = cond.shape[0]
    P = model.num_image_tokens
    steps = accelerator.num_steps(settings.steps)
    policy = sampler_policy(model, settings)
    schedule = policy.schedule(P, steps)
    device = cond.device
    guided = settings.cfg_weight != 0
    streams = 2 if guided else 1
    rows_cond = torch.cat([cond, model.null_conditions(cond)]) if guided else cond

    tokens = model.initial_tokens(n).to(device)  # (n, P)
    mask = torch.ones(n, P, dtype=torch.bool, device=device)  # True = still masked
    reveal_step = torch.full((n, P), -1, dtype=torch.long, device=device)
    if settings.reveal_policy == "halton":
        side = math.isqrt(P)
        if side * side != P:
            raise ValueError(f"the Halton policy needs a square token grid, got P={P}")
        order = halton_order(side).to(device)
    elif settings.reveal_policy != "confidence":
        raise ValueError(f"unknown reveal_policy {settings.reveal_policy!r}; choose confidence or halton")

    accelerator.reset(model, n * streams)
    prev_pos = prev_ids = prev_feat = None
    recorded: list[Tensor] = []
    revealed_so_far = 0
    reserved: Tensor | None = None  # (n, R) positions reserved by an earlier step, best first
    for i, k in enumerate(schedule):
        ctx = StepContext(
            step=i,
            num_steps=steps,
            tokens=tokens.repeat(streams, 1),
            mask=mask.repeat(streams, 1),
            cond=rows_cond,
            streams=streams,
            revealed_positions=None if prev_pos is None else prev_pos.repeat(streams, 1),
            revealed_ids=None if prev_ids is None else prev_ids.repeat(streams, 1),
            prev_features=prev_feat,
            num_to_reveal=k,
            reserved_positions=None if reserved is None else reserved.repeat(streams, 1),
        )
        out = accelerator.step(model, ctx)
        if on_step is not None:
            on_step(i, out)
        extra = _reserved_count(out.reserve_steps, reserved, schedule, i)
        # sample only where it matters: every row has the same m = P - revealed_so_far masked
        # positions, so they gather into a rectangle (CFG and softmax then skip revealed ones)
        masked = mask.nonzero()[:, 1].view(n, -1)  # (n, m) still-masked positions, ascending
        logits = _at_positions(out.logits, masked.repeat(streams, 1)).float()  # (B, m, V)
        if guided:
            w = cfg_weight_at(settings, i, steps)
            l_c, l_u = logits.chunk(2)
            logits = (1 + w) * l_c - w * l_u  # (n, m, V)
        if record_features:
            if out.features is None:
                raise ValueError("feature recording needs an accelerator that returns features")
            recorded.append(out.features.clone())

        drawn, log_conf = policy.draw(logits, generator)  # (n, m) codes and their log-confidence
        pred = tokens.scatter(1, masked, drawn)  # (n, P): drawn codes at masked positions
        if reserved is not None:  # an earlier step already chose these positions
            pos, reserved = reserved[:, :k], (reserved[:, k:] if reserved.shape[1] > k else None)
        elif settings.reveal_policy == "confidence":
            conf = policy.scores(log_conf, masked, mask, i, steps, generator)  # (n, P)
            pos = torch.topk(conf, k + extra, dim=-1).indices  # (n, k + extra), best first
            pos, reserved = pos[:, :k], (pos[:, k:] if extra else None)
        else:
            pos = order[revealed_so_far : revealed_so_far + k + extra].expand(n, k + extra)
            pos, reserved = pos[:, :k], (pos[:, k:] if extra else None)
        revealed_so_far += k
        ids = torch.gather(pred, 1, pos)  # (n, k)
        tokens = tokens.scatter(1, pos, ids)
        mask = mask.scatter(1, pos, False)
        reveal_step = reveal_step.scatter(1, pos, i)
        prev_pos, prev_ids, prev_feat = pos, ids, out.features
    return SampleResult(
        tokens=tokens, reveal_step=reveal_step, steps=steps, features=recorded, final_features=prev_feat
    )
