"""The generic sampling loop (``bench.sampling``) against MaskGIT-pytorch v1 semantics.

Reference: llvictorll/Maskgit-pytorch ``Trainer/vit.py`` (``adap_sche`` and ``sample``, in
the version MIGM-Shortcut vendors as ``MaskGIT-Shortcut/Trainer/vit.py``): reveal counts
from r = linspace(1, 0, N), CFG ``(1 + w') l_c - w' l_u`` with w' = w * i / (N - 1), Gumbel
noise of scale r_temp * (1 - i / (N - 1)) on log-confidence; Halton order from
Halton-MaskGIT ``build_halton_mask``. Expected values are computed by hand in this file.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.maskgit.testing import tiny_maskgit
from bench import sampling
from bench.protocol import Counts, SamplingSettings, StepContext, StepOutput
from bench.sampling import cfg_weight_at, halton_order, halton_sequence, reveal_schedule, sample

MODES = ("arccos", "cosine", "linear")


# ------------------------------------------------------------------- schedules
def _adap_sche_by_hand(P: int, N: int, curve) -> list[int]:
    """The reference's recipe in plain Python: curve(r_i) for r_i = 1 - i / (N - 1),
    scaled to sum to P, rounded, zeros -> 1, the last step takes the remainder."""
    vals = [curve(1 - i / (N - 1)) for i in range(N)]
    total = sum(vals)
    out = [round(v / total * P) for v in vals]
    out = [max(1, x) for x in out]
    out[-1] += P - sum(out)
    return out


def test_arccos_schedule_256_tokens_12_steps():
    by_hand = _adap_sche_by_hand(256, 12, lambda r: math.acos(r) / (math.pi / 2))
    assert by_hand == [1, 9, 13, 17, 19, 22, 24, 26, 28, 30, 32, 35]
    assert reveal_schedule(256, 12, "arccos") == by_hand


@pytest.mark.parametrize(
    "mode, curve, expected",
    [
        # r = [1, 2/3, 1/3, 0]; arccos(r)/(pi/2) = [0, .5354, .7837, 1] -> x16/2.319 = [0, 3.69, 5.41, 6.90]
        ("arccos", lambda r: math.acos(r) / (math.pi / 2), [1, 4, 5, 6]),
        # cos(r pi/2) = [0, .5, .8660, 1] -> x16/2.366 = [0, 3.38, 5.86, 6.76] -> [1, 3, 6, 7] -> last 6
        ("cosine", lambda r: math.cos(r * math.pi / 2), [1, 3, 6, 6]),
        # 1 - r = [0, 1/3, 2/3, 1] -> x16/2 = [0, 2.67, 5.33, 8] -> [1, 3, 5, 8] -> last 7
        ("linear", lambda r: 1 - r, [1, 3, 5, 7]),
    ],
)
def test_small_schedules_by_hand(mode, curve, expected):
    assert _adap_sche_by_hand(16, 4, curve) == expected
    assert reveal_schedule(16, 4, mode) == expected


def test_schedule_rounds_exact_ties_like_the_float32_reference():
    # linear, P=49, N=8: step 2 is exactly 2/7 / 4 * 49 = 3.5; the reference's float32
    # arithmetic lands just below it (3), float64 just above (4).
    assert reveal_schedule(49, 8, "linear") == [1, 2, 3, 5, 7, 9, 10, 12]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("P", [16, 64, 256, 1024])
def test_schedule_sums_to_P_with_at_least_one_per_step(mode, P):
    for N in list(range(1, min(P, 40) + 1)) + [P]:
        sched = reveal_schedule(P, N, mode)
        assert len(sched) == N and sum(sched) == P and min(sched) >= 1, (P, N, sched)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="steps"):
        reveal_schedule(16, 0)
    with pytest.raises(ValueError, match="cannot exceed"):
        reveal_schedule(16, 17)
    with pytest.raises(ValueError, match="arccos"):
        reveal_schedule(16, 4, "square-root")


def test_cfg_schedule():
    linear = SamplingSettings(cfg_weight=3.0, cfg_schedule="linear")
    assert [cfg_weight_at(linear, i, 4) for i in range(4)] == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert cfg_weight_at(linear, 0, 1) == 3.0  # a single step gets the full weight
    constant = SamplingSettings(cfg_weight=3.0, cfg_schedule="constant")
    assert [cfg_weight_at(constant, i, 4) for i in range(4)] == [3.0] * 4
    with pytest.raises(ValueError, match="cfg_schedule"):
        cfg_weight_at(SamplingSettings(cfg_schedule="cosine"), 0, 4)


# ----------------------------------------------------------------------- Halton
def test_halton_sequence_first_points():
    assert halton_sequence(7, 2).tolist() == [1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8]
    assert halton_sequence(5, 3).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 9, 4 / 9, 7 / 9])


def test_halton_order_4x4_by_hand():
    # k-th point (base 2 -> row, base 3 -> column, as build_halton_mask indexes the grid),
    # cell = floor(4 * x):
    #  k : 1    2    3    4    5    6    7    8    9    10   11   12   13   14   15   16  ... 23   25
    #  b2: 1/2  1/4  3/4  1/8  5/8  3/8  7/8  1/16 9/16 5/16 13/16 3/16 11/16 7/16 15/16 1/32 ... 29/32 19/32
    #  b3: 1/3  2/3  1/9  4/9  7/9  2/9  5/9  8/9  1/27 10/27 19/27 4/27 13/27 22/27 7/27 16/27 ... 23/27 17/27
    #  row,col: (2,1) (1,2) (3,0) (0,1) (2,3) (1,0) (3,2) (0,3) (2,0) (1,1) (3,2)dup (0,0) (2,1)dup
    #           (1,3) (3,1) (0,2); k=17..22 repeat cells, k=23 (3,3), k=24 repeats, k=25 (2,2)
    assert halton_order(4).tolist() == [9, 6, 12, 1, 11, 4, 14, 3, 8, 5, 0, 7, 13, 2, 15, 10]


@pytest.mark.parametrize("side", [1, 2, 3, 5, 6, 7, 16, 32])
def test_halton_order_is_a_permutation(side):
    order = halton_order(side)
    assert sorted(order.tolist()) == list(range(side * side))


# ---------------------------------------------------------- a scriptable stand-in
class FakeModel:
    """Just what the loop needs: P positions, a mask id, conditions."""

    def __init__(self, P: int = 16) -> None:
        self.num_image_tokens = P
        self.mask_id = 99
        self.default_sampling = SamplingSettings(steps=4, cfg_weight=0.0)

    def initial_tokens(self, n: int) -> Tensor:
        return torch.full((n, self.num_image_tokens), self.mask_id)

    def null_conditions(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)


class Scripted:
    """An accelerator whose logits come from ``fn(ctx)``; records every context."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.config = None
        self.counts = Counts()
        self.contexts: list[StepContext] = []

    def num_steps(self, default_steps: int) -> int:
        return default_steps

    def reset(self, model, batch_rows: int) -> None:
        self.contexts = []

    def step(self, model, ctx: StepContext) -> StepOutput:
        self.contexts.append(ctx)
        return StepOutput(logits=self.fn(ctx))


def test_cfg_combination_and_ramp():
    """l_c prefers code 3 a little, l_u prefers it a lot: guided, 3 beats 7 only while
    w' < 1/9, i.e. at step 0 of the linear ramp (w' = 3 * i / 5). A constant w, or the
    streams swapped, would give other codes."""
    V, P, n = 8, 16, 2

    def logits(ctx: StepContext) -> Tensor:
        assert ctx.streams == 2 and ctx.tokens.shape[0] == 2 * n
        assert ctx.cond.tolist() == [4, 5, -1, -1]  # conditional rows on top, null below
        out = torch.zeros(2 * n, P, V)
        out[:n, :, 3], out[:n, :, 7] = 5.0, 4.0  # l_c
        out[n:, :, 3] = 10.0  # l_u
        return out

    acc = Scripted(logits)
    settings = SamplingSettings(steps=6, cfg_weight=3.0, temperature=1e-4)  # ~argmax sampling
    res = sample(FakeModel(P), acc, torch.tensor([4, 5]), torch.Generator().manual_seed(0), settings)
    first = res.reveal_step == 0
    assert (res.tokens[first] == 3).all() and (res.tokens[~first] == 7).all()
    assert len(acc.contexts) == 6


def test_gumbel_scale_reaches_zero_at_the_last_step(monkeypatch):
    """Noise scale g * (1 - i / (N - 1)) (not 1 - i / N). Half the positions ("sure") have
    one allowed code (log-confidence 0), the other half ("unsure") four equal codes
    (log-confidence -log 4 = -1.386) plus a noise bonus of 1. With g = 2.4 and N = 3,
    step 1 has scale 1.2 < 1.386, so it reveals sure positions; with 1 - i/N it would be
    1.6 and reveal unsure ones. Step 0 (scale 2.4) reveals an unsure one."""
    P, n = 16, 3
    unsure = torch.arange(P) % 2 == 1

    def logits(ctx: StepContext) -> Tensor:
        out = torch.full((n, P, 4), -math.inf)
        out[:, :, 0] = 0.0
        out[:, unsure, :] = 0.0
        return out

    monkeypatch.setattr(
        sampling, "gumbel_noise", lambda shape, generator, device: unsure.float().expand(shape)
    )
    settings = SamplingSettings(steps=3, cfg_weight=0.0, mask_schedule="arccos", gumbel_temperature=2.4)
    assert reveal_schedule(P, 3, "arccos") == [1, 6, 9]
    res = sample(
        FakeModel(P), Scripted(logits), torch.zeros(n, dtype=torch.long), torch.Generator(), settings
    )
    assert unsure.expand(n, -1)[res.reveal_step == 0].all()
    assert not unsure.expand(n, -1)[res.reveal_step == 1].any()


def test_halton_policy_reveals_in_halton_order():
    P, n = 16, 2
    acc = Scripted(lambda ctx: torch.zeros(ctx.tokens.shape[0], P, 5))
    settings = SamplingSettings(steps=4, cfg_weight=0.0, reveal_policy="halton")
    res = sample(
        FakeModel(P), acc, torch.zeros(n, dtype=torch.long), torch.Generator().manual_seed(1), settings
    )
    order, start = halton_order(4), 0
    for i, k in enumerate(reveal_schedule(P, 4, "arccos")):
        assert (res.reveal_step[:, order[start : start + k]] == i).all()
        start += k
    # the loop tells the accelerator what it revealed one step later
    assert acc.contexts[0].revealed_positions is None
    assert acc.contexts[1].revealed_positions.tolist() == [order[:1].tolist()] * n


def test_bad_policy_and_non_square_grid():
    acc = Scripted(lambda ctx: torch.zeros(ctx.tokens.shape[0], 12, 5))
    with pytest.raises(ValueError, match="reveal_policy"):
        sample(FakeModel(12), acc, torch.zeros(1, dtype=torch.long), torch.Generator(),
               SamplingSettings(steps=3, cfg_weight=0.0, reveal_policy="random"))  # fmt: skip
    with pytest.raises(ValueError, match="square"):
        sample(FakeModel(12), acc, torch.zeros(1, dtype=torch.long), torch.Generator(),
               SamplingSettings(steps=3, cfg_weight=0.0, reveal_policy="halton"))  # fmt: skip


# --------------------------------------------------------- on the tiny MaskGIT
@pytest.fixture(scope="module")
def model():
    return tiny_maskgit(seed=0, with_vqgan=False)


def _run(model, seed: int, settings: SamplingSettings | None = None, n: int = 3, **kw):
    g = torch.Generator().manual_seed(seed)
    cond = model.conditions(n, g)
    return sample(model, Vanilla(VanillaConfig()), cond, g, settings, **kw)


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    a, b, c = _run(model, 7), _run(model, 7), _run(model, 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.reveal_step, b.reveal_step)
    assert not torch.equal(a.tokens, c.tokens)


def test_randomness_only_from_the_generator(model):
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = _run(model, 3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was never drawn from
    torch.manual_seed(12345)
    b = _run(model, 3)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.reveal_step, b.reveal_step)


@pytest.mark.parametrize("policy", ["confidence", "halton"])
@pytest.mark.parametrize("mode", MODES)
def test_every_token_revealed_once(model, policy, mode):
    settings = SamplingSettings(steps=5, cfg_weight=2.0, mask_schedule=mode, reveal_policy=policy)
    res = _run(model, 0, settings)
    assert res.steps == 5
    assert ((res.tokens >= 0) & (res.tokens < model.codebook_size)).all()  # no [MASK] left
    assert ((res.reveal_step >= 0) & (res.reveal_step < 5)).all()
    counts = torch.stack([(res.reveal_step == i).sum(1) for i in range(5)], dim=1)  # (n, N)
    assert (counts == torch.tensor(reveal_schedule(model.num_image_tokens, 5, mode))).all()


def test_record_features_with_and_without_cfg(model):
    n, N, L, D = 3, model.default_sampling.steps, model.seq_len, model.dim
    guided = _run(model, 0, record_features=True)
    assert len(guided.features) == N and all(f.shape == (2 * n, L, D) for f in guided.features)
    plain = _run(model, 0, SamplingSettings(steps=4, cfg_weight=0.0), record_features=True)
    assert len(plain.features) == 4 and all(f.shape == (n, L, D) for f in plain.features)
    assert _run(model, 0).features == []  # nothing recorded unless asked


class _Recorder(Vanilla):
    """Vanilla that keeps every step's output (the features exactly as the model produced them)."""

    def __init__(self, config: VanillaConfig) -> None:
        super().__init__(config)
        self.outputs: list[StepOutput] = []

    def step(self, model, ctx):
        out = super().step(model, ctx)
        self.outputs.append(out)
        return out


@pytest.mark.parametrize("cfg_weight, streams", [(2.0, 2), (0.0, 1)])
def test_sample_returns_the_last_steps_features(model, cfg_weight, streams):
    n, steps = 3, 4
    recorder = _Recorder(VanillaConfig())
    g = torch.Generator().manual_seed(0)
    settings = SamplingSettings(steps=steps, cfg_weight=cfg_weight)
    res = sample(model, recorder, model.conditions(n, g), g, settings)
    last = recorder.outputs[-1].features
    assert len(recorder.outputs) == steps and res.final_features is last  # the model's own tensor, no copy
    assert res.final_features.shape == (streams * n, model.seq_len, model.dim)
    assert not torch.equal(res.final_features, recorder.outputs[-2].features)  # not an earlier step's
    assert res.features == []  # the per-step record stays off unless asked


def test_final_features_are_none_when_the_accelerator_returns_none(model):
    class NoFeatures(Vanilla):
        def step(self, model, ctx):
            return StepOutput(logits=super().step(model, ctx).logits)

    g = torch.Generator().manual_seed(0)
    res = sample(model, NoFeatures(VanillaConfig()), model.conditions(2, g), g, SamplingSettings(steps=3))
    assert res.final_features is None


def test_on_step_observes_every_step_output_in_order(model):
    recorder, seen = _Recorder(VanillaConfig()), []

    def watch(i, out):
        seen.append((i, out))

    g = torch.Generator().manual_seed(0)
    sample(model, recorder, model.conditions(2, g), g, SamplingSettings(steps=5), on_step=watch)
    assert [i for i, _ in seen] == list(range(5))
    assert all(out is want for (_, out), want in zip(seen, recorder.outputs))


def test_cfg_weight_zero_is_one_stream(model):
    class Spy(Vanilla):
        def step(self, model, ctx):
            self.seen.append((ctx.streams, ctx.tokens.shape[0], ctx.cond.clone()))
            return super().step(model, ctx)

    for w, streams in ((0.0, 1), (2.0, 2)):
        spy = Spy(VanillaConfig())
        spy.seen = []
        g = torch.Generator().manual_seed(0)
        cond = model.conditions(3, g)
        sample(model, spy, cond, g, SamplingSettings(steps=4, cfg_weight=w))
        assert spy.counts.full_forwards == 4
        for s, rows, c in spy.seen:
            assert (s, rows) == (streams, 3 * streams)
            expected = cond if streams == 1 else torch.cat([cond, model.null_conditions(cond)])
            assert torch.equal(c, expected)


# ------------------------------------------------------------- token sampling
CHI2_CRIT_DF3_P001 = 16.266  # chi-square quantile, 3 degrees of freedom, upper tail 0.001 (tables)


def _chi_square(counts: Tensor, probs: list[float]) -> float:
    """Pearson's statistic sum (O - E)^2 / E over the categories of positive probability."""
    total = float(counts.sum())
    return sum((float(o) - total * p) ** 2 / (total * p) for o, p in zip(counts, probs) if p > 0)


def test_sample_categorical_draws_the_softmax_distribution():
    """100 000 draws of p = (0.5, 0.25, 0.15, 0.1, 0): the frequencies pass a chi-square test
    at the 0.001 level (a sampler off by 1 % in one category fails it: the statistic grows
    like n * 0.01^2 / p), the zero-probability code never appears, and the generator alone
    decides the draws."""
    probs = [0.5, 0.25, 0.15, 0.1, 0.0]
    logp = torch.tensor(probs).log().expand(100_000, -1)  # (rows, V), log 0 = -inf
    ids = sampling.sample_categorical(logp, torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=5)
    assert ids.shape == (100_000,) and counts[4] == 0
    assert _chi_square(counts, probs) < CHI2_CRIT_DF3_P001
    again = sampling.sample_categorical(logp, torch.Generator().manual_seed(0))
    other = sampling.sample_categorical(logp, torch.Generator().manual_seed(1))
    assert torch.equal(ids, again) and not torch.equal(ids, other)


def test_loop_draws_each_position_from_its_own_softmax():
    """One step reveals all P positions at once (no selection by confidence), so every final
    token is a plain draw: even positions from softmax(l_even), odd ones from softmax(l_odd)."""
    P, n = 16, 4000
    p_even, p_odd = [0.7, 0.2, 0.1, 0.0], [0.0, 0.1, 0.3, 0.6]
    table = torch.tensor([p_even, p_odd] * (P // 2)).log()  # (P, V)

    def logits(ctx: StepContext) -> Tensor:
        return table.expand(ctx.tokens.shape[0], -1, -1)

    settings = SamplingSettings(steps=1, cfg_weight=0.0)
    res = sample(
        FakeModel(P), Scripted(logits), torch.zeros(n, dtype=torch.long), torch.Generator(), settings
    )
    even, odd = res.tokens[:, 0::2].reshape(-1), res.tokens[:, 1::2].reshape(-1)
    assert _chi_square(torch.bincount(even, minlength=4), p_even) < CHI2_CRIT_DF3_P001
    assert _chi_square(torch.bincount(odd, minlength=4), p_odd) < CHI2_CRIT_DF3_P001
    assert not (even == 3).any() and not (odd == 0).any()


def test_later_steps_sample_the_still_masked_positions_at_their_own_logits():
    """Position j allows only code (3 j) mod V: whatever subset of positions is still masked at
    a step, each revealed token must come from its own position's logits."""
    P, n, V = 16, 5, 16
    allowed = (3 * torch.arange(P)) % V
    table = torch.full((P, V), -1e4)  # finite: CFG combines both streams' logits
    table[torch.arange(P), allowed] = 0.0

    def logits(ctx: StepContext) -> Tensor:
        return table.expand(ctx.tokens.shape[0], -1, -1)

    settings = SamplingSettings(steps=5, cfg_weight=2.0)
    res = sample(FakeModel(P), Scripted(logits), torch.arange(n), torch.Generator().manual_seed(3), settings)
    assert torch.equal(res.tokens, allowed.expand(n, -1))


def test_sample_categorical_couples_nearby_distributions():
    """Paired metrics compare an accelerator's tokens with vanilla's under the same seed, so
    two nearby distributions must give the same draw as often as the exponential race
    (torch.multinomial's CPU rule) does. Expected values from the rule itself: with the same
    uniforms u, id = argmax p / -log(u). An inverse-CDF draw agrees far less often (about
    0.67 on these inputs), because a small change of one p shifts every later CDF boundary."""
    g = torch.Generator().manual_seed(0)  # builds the fixed test distributions
    base = torch.log_softmax(torch.randn(200, 64, 256, generator=g) * 3, -1)
    lp1 = torch.log_softmax(base + 0.3 * torch.randn(base.shape, generator=g), -1)
    lp2 = torch.log_softmax(base + 0.3 * torch.randn(base.shape, generator=g), -1)
    a = sampling.sample_categorical(lp1, torch.Generator().manual_seed(1))
    b = sampling.sample_categorical(lp2, torch.Generator().manual_seed(1))
    u = torch.rand(lp1.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, (lp1.exp() / -u.log()).argmax(-1))
    assert (a == b).float().mean() > 0.8


def test_logits_at_positions_are_the_gathered_rows():
    """The loop's row indexing returns exactly what torch.gather with the expanded index does."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 9, 5, generator=g)
    positions = torch.stack([torch.randperm(9, generator=g)[:6].sort().values for _ in range(4)])  # (4, 6)
    expected = torch.gather(logits, 1, positions[..., None].expand(-1, -1, 5))
    assert torch.equal(sampling._at_positions(logits, positions), expected)
