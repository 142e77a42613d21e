"""Training-free cache baselines (ML-Cache, ReCAP, TaylorSeer, dLLM-Cache): exactness at
their no-caching settings, their selection rules on hand-made cases, that partial steps
compute only what they select, and honest counts. Runs on a tiny random model (and on the
tiny MaskGIT when it is available)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from accelerators.dllm_cache import DLLMCache, DLLMCacheConfig, select_changed, value_change_scores
from accelerators.ml_cache import (
    MLCache,
    MLCacheConfig,
    is_refresh_step,
    least_confident_in_sequence,
    least_confident_positions,
    recompute_count,
)
from accelerators.recap import ReCAP, ReCAPConfig, group_length
from accelerators.taylorseer import TaylorForecaster, TaylorSeer, TaylorSeerConfig, is_full_step
from accelerators.vanilla import Vanilla, VanillaConfig
from bench.forward import layout_of
from bench.protocol import Counts, SamplingSettings, StepContext, StepOutput
from bench.sampling import reveal_schedule, sample, sampler_policy


# --------------------------------------------------------------------------- tiny model
class TinyBlock:
    """A pre-norm transformer block on plain tensors, implementing the block protocol."""

    def __init__(self, dim: int, heads: int, g: torch.Generator) -> None:
        self.num_heads = heads

        def linear(i: int, o: int) -> tuple[Tensor, Tensor]:
            return torch.randn(o, i, generator=g) / math.sqrt(i), 0.1 * torch.randn(o, generator=g)

        self.w_qkv, self.b_qkv = linear(dim, 3 * dim)
        self.w_out, self.b_out = linear(dim, dim)
        self.w_up, self.b_up = linear(dim, 2 * dim)
        self.w_down, self.b_down = linear(2 * dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, q, d = x.shape
        return x.view(b, q, self.num_heads, d // self.num_heads).transpose(1, 2)

    def qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.linear(F.layer_norm(h, h.shape[-1:]), self.w_qkv, self.b_qkv)
        q, k, v = x.chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def value(self, h: Tensor) -> Tensor:
        d = h.shape[-1]
        return self._heads(F.linear(F.layer_norm(h, h.shape[-1:]), self.w_qkv[2 * d :], self.b_qkv[2 * d :]))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        o = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = o.shape
        return F.linear(o.transpose(1, 2).reshape(b, n, -1), self.w_out, self.b_out)

    def mlp(self, h: Tensor) -> Tensor:
        x = F.gelu(F.linear(F.layer_norm(h, h.shape[-1:]), self.w_up, self.b_up))
        return F.linear(x, self.w_down, self.b_down)


class TinyModel:
    """4x4 token grid, codebook 8, 10 classes, 2 blocks of width 32; class token last."""

    name = "tiny"

    def __init__(
        self, seed: int = 0, grid: int = 4, codebook: int = 8, nclass: int = 10, dim: int = 32
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.num_image_tokens = grid * grid
        self.seq_len = self.num_image_tokens + 1
        self.codebook_size = codebook
        self.mask_id = codebook
        self.nclass = nclass
        self.dim = dim
        self.tok_emb = torch.randn(codebook + 1 + nclass + 1, dim, generator=g)
        self.pos_emb = torch.randn(self.seq_len, dim, generator=g)
        self.head_bias = 0.5 * torch.randn(self.num_image_tokens, codebook, generator=g)
        self.blocks = [TinyBlock(dim, 4, g) for _ in range(2)]
        self.default_sampling = SamplingSettings(steps=8, cfg_weight=3.0)

    def conditions(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.nclass, (n,), generator=generator)

    def null_conditions(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def initial_tokens(self, n: int) -> Tensor:
        return torch.full((n, self.num_image_tokens), self.mask_id, dtype=torch.long)

    def embed(self, tokens: Tensor, cond: Tensor, positions: Tensor | None = None) -> Tensor:
        class_ids = torch.where(cond < 0, self.codebook_size + 1 + self.nclass, self.codebook_size + 1 + cond)
        ids = torch.cat([tokens, class_ids[:, None]], dim=1)  # (B, L)
        if positions is None:
            return self.tok_emb[ids] + self.pos_emb
        return self.tok_emb[torch.gather(ids, 1, positions)] + self.pos_emb[positions]

    def embed_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        return self.tok_emb[ids] + self.pos_emb[positions]

    def final_features(self, h: Tensor) -> Tensor:
        return F.layer_norm(h, h.shape[-1:])

    def head(self, features: Tensor, positions: Tensor | None = None) -> Tensor:
        bias = self.head_bias[: features.shape[1]] if positions is None else self.head_bias[positions]
        return 0.4 * features @ self.tok_emb[: self.codebook_size].t() + bias

    def decode(self, tokens: Tensor) -> Tensor:
        return tokens.float()[:, None, None, :].expand(-1, 3, 1, -1) / self.codebook_size

    def fingerprint(self) -> str:
        return "tiny"


def _tiny_maskgit():
    testing = pytest.importorskip("base_models.maskgit.testing")
    model = testing.tiny_maskgit(seed=0)
    if model.default_sampling.steps > model.num_image_tokens:
        pytest.skip("tiny MaskGIT default steps exceed its token count")
    return model


@pytest.fixture(scope="module")
def dimoo_folder(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from base_models.dimoo.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("dimoo"), vqvae=False)


def _tiny_dimoo(folder):
    """Lumina-DiMOO on a 4x4 grid: its own layout (prompt first, left padding, rotary positions)."""
    from base_models.dimoo.checkpoint import load_transformer
    from base_models.dimoo.model import DIMOO_SAMPLING, DiMOOModel
    from base_models.dimoo.testing import CODEBOOK
    from base_models.dimoo.text import DiMOOTokenizer

    sampling = replace(DIMOO_SAMPLING, steps=6)
    tokenizer = DiMOOTokenizer(folder)
    return DiMOOModel(load_transformer(folder), tokenizer, None, CODEBOOK, 4, 4, default_sampling=sampling)


@pytest.fixture(params=["tiny", "tiny_maskgit", "tiny_dimoo"])
def model(request):
    if request.param == "tiny_dimoo":
        return _tiny_dimoo(request.getfixturevalue("dimoo_folder"))
    return TinyModel() if request.param == "tiny" else _tiny_maskgit()


def run(model, accel, n: int = 3, seed: int = 0, **settings):
    """sample() with CFG on (the model's default settings unless overridden)."""
    g = torch.Generator().manual_seed(seed)
    cond = model.conditions(n, g)
    s = replace(model.default_sampling, **settings) if settings else model.default_sampling
    return sample(model, accel, cond, g, s)


NO_CACHING = [
    MLCache(MLCacheConfig(refresh_interval=1)),
    ReCAP(ReCAPConfig(num_cache_iters=0)),
    ReCAP(ReCAPConfig(pre_full_iters=100)),
    TaylorSeer(TaylorSeerConfig(interval=1)),
    DLLMCache(DLLMCacheConfig(gen_interval=1, prompt_interval=1)),
]


# ----------------------------------------------------------- exactness without caching
@pytest.mark.parametrize("accel", NO_CACHING, ids=lambda a: type(a).__name__)
def test_no_caching_setting_equals_vanilla_exactly(model, accel):
    assert model.default_sampling.cfg_weight != 0  # CFG on: two streams per image
    vanilla = Vanilla(VanillaConfig())
    expected = run(model, vanilla)
    got = run(model, accel)
    assert torch.equal(got.tokens, expected.tokens)
    assert torch.equal(got.reveal_step, expected.reveal_step)
    assert accel.counts.full_forwards == vanilla.counts.full_forwards == expected.steps
    assert accel.counts.partial_forwards == 0


def _drive(model, accel, steps: int = 6, n: int = 2, seed: int = 1) -> list[StepOutput]:
    """Run ``accel`` on a fixed token trajectory (random reveal order, CFG rows) so that two
    accelerators see identical inputs; returns every step's output."""
    g = torch.Generator().manual_seed(seed)
    P = model.num_image_tokens
    cond = model.conditions(n, g)
    rows_cond = torch.cat([cond, model.null_conditions(cond)])
    final = torch.randint(0, model.codebook_size, (n, P), generator=g)
    order = torch.argsort(torch.rand(n, P, generator=g), dim=1)
    schedule = reveal_schedule(P, steps)
    tokens = model.initial_tokens(n)
    accel.reset(model, 2 * n)
    outs, done, prev, reserved = [], 0, None, 0  # reserved: positions still reserved
    for i, k in enumerate(schedule):
        ctx = StepContext(
            step=i, num_steps=steps, tokens=tokens.repeat(2, 1), mask=(tokens == model.mask_id).repeat(2, 1),
            cond=rows_cond, streams=2, revealed_positions=prev, revealed_ids=None, prev_features=None,
            num_to_reveal=k,
            reserved_positions=order[:, done : done + reserved].repeat(2, 1) if reserved else None,
        )  # fmt: skip
        outs.append(accel.step(model, ctx))
        # the fixed order reveals reserved positions next anyway: only the bookkeeping differs
        reserved = max(reserved - k, 0) + sum(schedule[i + 1 : i + 1 + outs[-1].reserve_steps])
        pos = order[:, done : done + k]
        tokens = tokens.scatter(1, pos, torch.gather(final, 1, pos))
        prev, done = pos.repeat(2, 1), done + k
    return outs


def test_full_recomputation_settings_match_vanilla_logits(model):
    """Settings that recompute every position on partial paths agree with vanilla up to rounding."""
    reference = _drive(model, Vanilla(VanillaConfig()))
    everything = [
        MLCache(MLCacheConfig(cache_ratio=0.0, warmup_ratio=0.0, refresh_interval=100)),
        DLLMCache(DLLMCacheConfig(gen_interval=100, prompt_interval=1, transfer_ratio=1.0)),
    ]
    # the features of every real position (a padded layout's padding is never recomputed by
    # ML-Cache's sequence scope: no key attends to it and no head reads it); _drive's rows
    cond = model.conditions(2, torch.Generator().manual_seed(1))
    real = layout_of(model, torch.cat([cond, model.null_conditions(cond)])).key_mask  # (B, L) or None
    for accel in everything:
        outs = _drive(model, accel)
        assert accel.counts.partial_forwards == len(outs) - 1  # the partial path really ran
        for got, want in zip(outs, reference):
            torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
            got_f, want_f = got.features, want.features  # (B, L, D)
            if real is not None:
                got_f, want_f = got_f[real], want_f[real]  # (real rows, D)
            torch.testing.assert_close(got_f, want_f, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------- ML-Cache
def test_ml_cache_refresh_schedule_matches_reference():
    # Lumina-DiMOO: 18 steps, warmup 0.3 -> warmup_step = 5; refresh every 5 after it
    full = [i for i in range(18) if is_refresh_step(i, 18, 0.3, 5)]
    assert full == [0, 1, 2, 3, 4, 5, 10, 15]
    assert all(is_refresh_step(i, 18, 0.3, 1) for i in range(18))


def test_ml_cache_recomputes_least_confident_positions():
    logits = torch.full((2, 5, 3), -5.0)
    # max logit per position, row 0: [0.9, 0.1, 0.5, 0.2, 0.8]; row 1: [0.3, 0.7, 0.05, 0.6, 0.4]
    for row, maxima in enumerate([[0.9, 0.1, 0.5, 0.2, 0.8], [0.3, 0.7, 0.05, 0.6, 0.4]]):
        for p, m in enumerate(maxima):
            logits[row, p, p % 3] = m
    chosen = least_confident_positions(logits, 2).sort(dim=1).values
    assert chosen.tolist() == [[1, 3], [0, 2]]


def _reference_selects(conf: torch.Tensor, ratio: float) -> int:
    """Lumina-DiMOO's rule: recompute every position whose confidence is at or below
    ``torch.quantile(conf.float(), 1 - cache_ratio)``."""
    threshold = torch.quantile(conf.to(torch.float), 1 - ratio, dim=-1, keepdim=True)
    return int((conf <= threshold).sum())


def test_ml_cache_count_is_the_reference_quantile_count_for_every_size_and_ratio():
    """For each (P, ratio) the reference's rule is run on two tie-free confidence vectors (a
    shuffled arange) built so that rounding in the interpolation cannot move the threshold
    across a value: the count-th smallest value is 0 (the threshold must stay below it unless
    the reference selects more) or the (count + 1)-th is 0 (the threshold must reach it unless
    the reference selects fewer). Both must select exactly ``recompute_count``."""
    g = torch.Generator().manual_seed(0)
    ratios = [round(0.01 * i, 2) for i in range(100)] + [0.875, 0.925, 0.975, 0.999, 1 / 3, 2 / 3]
    sizes = [*range(1, 61), 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 1024, 1025, 4096]
    mismatches = []
    for n in sizes:
        for r in ratios:
            c = recompute_count(n, r)
            order = torch.randperm(n, generator=g).to(torch.float32)
            at_most, at_least = _reference_selects(order - c, r), _reference_selects(order - (c - 1), r)
            if not at_most <= c <= at_least:
                mismatches.append((n, r, c, at_most, at_least))
    assert mismatches == []


def test_ml_cache_count_follows_torch_quantile_float32_rank():
    # written down from the rule: rank = float32(1 - ratio) * (P - 1); count = floor(rank) + 1
    # (+1 when the float32 weight rank - floor(rank) rounds to 1)
    assert recompute_count(256, 0.8) == 52  # float32(0.2) = 0.200000003, rank 51.00000076
    assert recompute_count(256, 0.9) == 26  # rank 25.5
    assert recompute_count(64, 0.9) == 7  # rank 6.3
    assert recompute_count(1024, 0.95) == 52  # rank 51.15
    assert recompute_count(65, 0.5) == 33  # rank 32.0: the threshold is the 33rd value itself
    assert recompute_count(11, 0.1) == 9  # float32(0.9) = 0.899999976, rank 8.99999976
    assert recompute_count(26, 0.96) == 2  # rank 0.99999998: its float32 weight is 1.0
    assert recompute_count(17, 0.0) == 17 and recompute_count(1, 0.9) == 1
    with pytest.raises(ValueError, match="at least one position"):
        recompute_count(0, 0.9)


def test_ml_cache_sequence_scope_selects_the_reference_set_per_branch():
    """Scope "sequence" (Lumina-DiMOO's own setting): in each branch (row) the positions whose
    confidence is at or below ``torch.quantile`` of that branch's real positions, prompt
    included; padding (a shorter unconditional prompt, left-padded) is never picked, and a row
    with fewer picks repeats its first one."""
    g = torch.Generator().manual_seed(3)
    conf = torch.randn(2, 12, generator=g)  # (B, L): row 0 the conditional branch, row 1 the unconditional
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, :4] = False  # its 4 padding positions
    conf[1, :4] = -10.0  # lowest of all: must still never be picked
    got = least_confident_in_sequence(conf, real, cache_ratio=0.6)
    for row in range(2):
        values = conf[row, real[row]]
        threshold = torch.quantile(values.float(), 1 - 0.6)
        want = set((torch.nonzero(real[row] & (conf[row] <= threshold))[:, 0]).tolist())
        picks = got[row].tolist()
        assert set(picks) == want
        assert picks[len(want) :] == [picks[0]] * (len(picks) - len(want))  # padding the rectangle
    assert got.shape == (2, len(set(got[0].tolist())))  # the conditional row has the most real positions


def test_ml_cache_sequence_scope_needs_sequence_logits(model):
    sequence = MLCache(MLCacheConfig(scope="sequence", warmup_ratio=0.0))
    if getattr(model, "sequence_logits", None) is not None:  # the tiny DiMOO: its own scope runs
        assert run(model, sequence).tokens.shape == (3, model.num_image_tokens)
    else:
        with pytest.raises(ValueError, match="scope=sequence needs image-code logits"):
            run(model, sequence)
    with pytest.raises(ValueError, match="scope must be one of"):
        MLCache(MLCacheConfig(scope="prompt"))


def test_ml_cache_partial_steps_compute_only_selected(model, monkeypatch):
    # scope "image" (what "auto" gives every model without sequence_logits, here forced on the
    # tiny DiMOO too): the least confident image tokens + every condition position
    cfg = MLCacheConfig(cache_ratio=0.75, warmup_ratio=0.0, refresh_interval=4, scope="image")
    rows = _record_rows(model, monkeypatch)
    accel = MLCache(cfg)
    result = run(model, accel)
    P, L, N = model.num_image_tokens, model.seq_len, result.steps
    count = recompute_count(P, 0.75) + (L - P)
    partial = [i for i in range(N) if not is_refresh_step(i, N, 0.0, 4)]
    expected = {i: (count if i in partial else L) for i in range(N)}
    assert rows["qkv"] == rows["mlp"] == _per_layer(expected, model)
    assert accel.counts.full_forwards == N - len(partial)
    assert accel.counts.partial_forwards == len(partial)
    assert accel.counts.partial_positions == pytest.approx(len(partial) * count / L)


# ---------------------------------------------------------------------------- ReCAP
def test_recap_group_schedule_matches_reference():
    assert [group_length(i, 12, 8, 1) for i in (7, 8, 10)] == [0, 1, 1]
    # pre 2, cache 2: full steps 0, 1, 2, 5, 8, 11 (the last group has no room)
    assert [group_length(i, 12, 2, 2) for i in (0, 1, 2, 5, 8, 11)] == [0, 0, 2, 2, 2, 0]
    assert group_length(5, 12, 0, 0) == 0


class _Scripted:
    """Returns fixed logits; step 0 reserves the positions of the next ``reserve`` steps."""

    def __init__(self, logits_per_step: list[Tensor], reserve: int) -> None:
        self.logits, self.reserve = logits_per_step, reserve
        self.counts, self.config, self.seen = Counts(), None, []

    def num_steps(self, default: int) -> int:
        return len(self.logits)

    def reset(self, model, rows: int) -> None:
        self.seen = []

    def step(self, model, ctx: StepContext) -> StepOutput:
        self.seen.append(ctx.reserved_positions)
        return StepOutput(logits=self.logits[ctx.step], reserve_steps=self.reserve if ctx.step == 0 else 0)


def _one_hot_at(positions: list[int], P: int, V: int) -> Tensor:
    """(1, P, V) logits: certain (confidence 0) at ``positions``, uniform (log 1/V) elsewhere."""
    logits = torch.zeros(1, P, V)
    logits[0, positions, 0] = 60.0
    return logits


@pytest.mark.parametrize("policy", ["confidence", "halton"])
def test_reserved_group_is_revealed_whatever_later_logits_say(policy):
    """The group fixed at step 0 (reserve_steps=2) is what steps 0-2 reveal, in the reserved
    order, although steps 1-2 are certain about other positions only."""
    from bench.sampling import halton_order

    model = TinyModel()
    P, V = model.num_image_tokens, model.codebook_size
    settings = SamplingSettings(steps=5, cfg_weight=0.0, gumbel_temperature=0.0, reveal_policy=policy)
    k = reveal_schedule(P, 5, settings.mask_schedule)
    size = k[0] + k[1] + k[2]
    order = (
        halton_order(4).tolist()
        if policy == "halton"
        else [5, 11, 2, 14, 0, 7, 9, 3, 1, 4, 6, 8, 10, 12, 13, 15]
    )
    group, others = order[:size], order[size:]
    first, later = _one_hot_at(group, P, V), _one_hot_at(others, P, V)
    accel = _Scripted([first, later, later, later, later], reserve=2)
    result = sample(model, accel, torch.tensor([3]), torch.Generator().manual_seed(0), settings)
    at = [sorted(torch.nonzero(result.reveal_step[0] == i).flatten().tolist()) for i in range(3)]
    assert sorted(at[0] + at[1] + at[2]) == sorted(group)
    reserved = accel.seen[1][0].tolist()  # what step 1 was told, in reveal order
    assert accel.seen[0] is None and len(reserved) == k[1] + k[2]
    assert at[1] == sorted(reserved[: k[1]]) and at[2] == sorted(reserved[k[1] :])
    assert accel.seen[2][0].tolist() == reserved[k[1] :] and accel.seen[3] is None
    if policy == "halton":  # a fixed order: reserved best first
        assert reserved == group[k[0] :]


def test_recap_local_steps_run_only_the_group(model, monkeypatch):
    cfg = ReCAPConfig(pre_full_iters=2, num_cache_iters=2)
    rows = _record_rows(model, monkeypatch)
    accel = ReCAP(cfg)
    seen: list[StepContext] = []
    original = accel.step

    def spy(m, ctx):
        seen.append(ctx)
        return original(m, ctx)

    monkeypatch.setattr(accel, "step", spy)
    result = run(model, accel)
    N, P, L = result.steps, model.num_image_tokens, model.seq_len
    k = sampler_policy(model, model.default_sampling).schedule(P, N)  # the model's own reveal counts
    expected, full, step = {}, 0, 0
    while step < N:
        expected[step] = L
        full += 1
        m = group_length(step, N, 2, 2)
        group = sum(k[step : step + m + 1])
        # the group: revealed at the full step + reserved for the local steps
        if m:
            revealed = seen[step + 1].revealed_positions
            reserved = seen[step + 1].reserved_positions
            assert revealed.shape[1] + reserved.shape[1] == group
            for j in range(1, m + 1):
                at_j = torch.nonzero(result.reveal_step == step + j)  # (n * k_j, 2)
                rows_reserved = reserved[: result.tokens.shape[0]]
                for r, p in at_j.tolist():
                    assert p in rows_reserved[r].tolist()
        for j in range(1, m + 1):
            expected[step + j] = group + (L - P)
        step += m + 1
    assert rows["qkv"] == rows["mlp"] == _per_layer(expected, model)
    assert accel.counts.full_forwards == full < N


# ----------------------------------------------------------------------- TaylorSeer
def test_taylorseer_schedule_matches_reference():
    assert [i for i in range(12) if is_full_step(i, 4, 2)] == [0, 1, 5, 9]
    assert all(is_full_step(i, 1, 2) for i in range(12))


def test_forecaster_is_exact_on_a_linear_trajectory():
    f = TaylorForecaster(max_order=4)
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    for t in (0, 1, 5, 9):
        f.update(a + b * t, t)
    for t in (10, 11, 14):
        torch.testing.assert_close(f.predict(t), a + b * t)


def test_forecaster_follows_the_reference_formula_on_a_quadratic():
    f = TaylorForecaster(max_order=2)
    for t in (0, 1, 5):
        f.update(torch.tensor([float(t * t)]), t)
    # F0 = 25; F1 = (25 - 1) / 4 = 6; old F1 = (1 - 0) / 1 = 1; F2 = (6 - 1) / 4 = 1.25
    # predict(7): k = 2 -> 25 + 6 * 2 + 1.25 * 2**2 / 2! = 39.5 (the true value is 49)
    assert f.predict(7).item() == pytest.approx(39.5)
    assert f.predict(5).item() == pytest.approx(25.0)
    g = TaylorForecaster(max_order=2)
    g.update(torch.tensor([0.0]), 0)
    g.update(torch.tensor([1.0]), 1, derivatives=False)  # warm-up: value only
    assert len(g.factors) == 1 and g.predict(3).item() == 1.0


def test_forecasting_the_sum_equals_summing_per_module_forecasts():
    g = torch.Generator().manual_seed(0)
    per_module = [TaylorForecaster(3) for _ in range(4)]
    total = TaylorForecaster(3)
    for t in (0, 1, 4, 7):
        values = [torch.randn(5, generator=g) for _ in per_module]
        for f, v in zip(per_module, values):
            f.update(v, t)
        total.update(sum(values), t)
    torch.testing.assert_close(total.predict(9), sum(f.predict(9) for f in per_module))


def test_taylor_steps_run_no_block(model, monkeypatch):
    rows = _record_rows(model, monkeypatch)
    accel = TaylorSeer(TaylorSeerConfig(interval=3, max_order=2))
    result = run(model, accel)
    N, L = result.steps, model.seq_len
    full = [i for i in range(N) if is_full_step(i, 3, 2)]
    assert rows["qkv"] == rows["mlp"] == _per_layer({i: L for i in full}, model)
    assert accel.counts.full_forwards == len(full)
    assert accel.counts.other_calls == N - len(full)


# ----------------------------------------------------------------------- dLLM-Cache
def test_dllm_value_scores_are_cosine_over_the_width():
    g = torch.Generator().manual_seed(0)
    new, old = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 4, 6, 8, generator=g)
    new_flat, old_flat = new.transpose(1, 2).flatten(2), old.transpose(1, 2).flatten(2)  # (B, Q, H * Dh)
    torch.testing.assert_close(value_change_scores(new, old), F.cosine_similarity(new_flat, old_flat, dim=-1))


def test_dllm_v_verify_selects_most_changed_tokens():
    old = torch.ones(1, 2, 5, 2)  # (B, H, Q, Dh): 5 tokens, all pointing the same way
    new = old.clone()
    new[0, :, 1] = torch.tensor([1.0, -1.0])  # orthogonal: cosine 0
    new[0, :, 3] = -1.0  # reversed: cosine -1
    new[0, 0, 4] = torch.tensor([1.0, 0.5])  # a small turn in one head only
    assert select_changed(new, old, 2).tolist() == [[3, 1]]
    assert select_changed(new, old, 3).tolist() == [[3, 1, 4]]
    new2 = new * 7.0  # scale does not matter
    assert select_changed(new2, old, 2).tolist() == [[3, 1]]


@pytest.mark.parametrize("first_layer", [True, False])
def test_dllm_partial_steps_compute_only_selected(model, monkeypatch, first_layer):
    cfg = DLLMCacheConfig(
        prompt_interval=3, gen_interval=4, transfer_ratio=0.25, refresh_first_layer=first_layer
    )
    rows = _record_rows(model, monkeypatch)
    accel = DLLMCache(cfg)
    result = run(model, accel)
    N, P, L, depth = result.steps, model.num_image_tokens, model.seq_len, len(model.blocks)
    verify = int(P * 0.25)
    qkv, value = {}, {}
    for i in range(N):
        gen, prompt = i % 4 == 0, i % 3 == 0
        if gen and prompt:
            qkv[i] = [L] * depth
            continue
        if gen:
            per_layer = [P] * depth
        else:
            per_layer = [verify + (L - P if prompt else 0)] * depth
            value[i] = [P] * (depth - 1 if first_layer else depth)
        if first_layer:  # cache_hook_LLaDA.py: layer_id == 0 always refreshes prompt and gen
            per_layer[0] = L
        qkv[i] = per_layer
    assert rows["qkv"] == rows["mlp"] == qkv
    assert rows["value"] == value
    assert accel.counts.full_forwards == sum(1 for i in range(N) if i % 12 == 0)


@pytest.mark.parametrize("first_layer", [True, False])
def test_dllm_without_transfer_reuses_everything_between_refreshes(model, monkeypatch, first_layer):
    rows = _record_rows(model, monkeypatch)
    cfg = DLLMCacheConfig(
        prompt_interval=100, gen_interval=4, transfer_ratio=0.0, refresh_first_layer=first_layer
    )
    accel = DLLMCache(cfg)
    result = run(model, accel)
    N, P, L, depth = result.steps, model.num_image_tokens, model.seq_len, len(model.blocks)
    expected = {i: [L if i == 0 else P] * depth for i in range(0, N, 4)}
    if first_layer:  # layer 0 always in full; on the other steps nothing else runs
        expected = {i: [L] + expected.get(i, [])[1:] for i in range(N)}
    assert rows["qkv"] == rows["mlp"] == expected
    assert rows["value"] == {}
    cheap = N - len(range(0, N, 4))
    if first_layer:
        assert accel.counts.other_calls == 0 and accel.counts.partial_forwards == N - 1
    else:
        assert accel.counts.other_calls == cheap


def _hand_layer(block, h):
    """One pre-norm transformer layer from the block's own ops: (h', attention out, MLP out)."""
    q, k, v = block.qkv(h)
    attn = block.attend(q, k, v)
    mlp = block.mlp(h + attn)
    return h + attn + mlp, attn, mlp


def _ctx(model, step, tokens, cond):
    return StepContext(step=step, num_steps=8, tokens=tokens, mask=tokens == model.mask_id, cond=cond,
                       streams=1, revealed_positions=None, revealed_ids=None, prev_features=None)  # fmt: skip


@pytest.mark.parametrize("first_layer", [True, False])
def test_dllm_first_layer_rule_on_hand_made_tokens(first_layer):
    """dLLM-Cache with nothing to recompute (transfer 0, no refresh after step 0), written
    out by hand. Reference (cache_hook_LLaDA.py since 1ef9d03): layer 0 is recomputed from
    the new embedding, every later layer adds its cached attention and MLP outputs. Older
    rule (cache_hook_MMaDA.py): every layer adds its cached outputs."""
    model = TinyModel()
    g = torch.Generator().manual_seed(4)
    P = model.num_image_tokens
    t0 = model.initial_tokens(2)
    t1 = t0.clone()
    t1[:, : P // 2] = torch.randint(0, model.codebook_size, (2, P // 2), generator=g)
    cond = torch.tensor([1, -1])
    with torch.no_grad():
        h, cached = model.embed(t0, cond), []
        for block in model.blocks:
            h, attn, mlp = _hand_layer(block, h)
            cached.append((attn, mlp))
        h = model.embed(t1, cond)
        first = 0
        if first_layer:
            h, _, _ = _hand_layer(model.blocks[0], h)
            first = 1
        for attn, mlp in cached[first:]:
            h = h + attn + mlp
        expected = model.head(model.final_features(h)[:, :P])
        accel = DLLMCache(DLLMCacheConfig(prompt_interval=100, gen_interval=100, transfer_ratio=0.0,
                                          refresh_first_layer=first_layer))  # fmt: skip
        accel.reset(model, 2)
        accel.step(model, _ctx(model, 0, t0, cond))
        got = accel.step(model, _ctx(model, 1, t1, cond)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    other = DLLMCache(DLLMCacheConfig(prompt_interval=100, gen_interval=100, transfer_ratio=0.0,
                                      refresh_first_layer=not first_layer))  # fmt: skip
    other.reset(model, 2)
    with torch.no_grad():
        other.step(model, _ctx(model, 0, t0, cond))
        assert (other.step(model, _ctx(model, 1, t1, cond)).logits - expected).abs().max() > 1e-3


def test_dllm_first_layer_refresh_is_the_default():
    assert DLLMCacheConfig().refresh_first_layer is True


def test_dllm_replaces_every_image_value_even_when_nothing_is_selected():
    """int(P * transfer_ratio) == 0 with transfer_ratio > 0: the reference's ``transfer`` flag
    is set, ``refresh_index`` selects no token, and ``kv_cache_gen["v"] = v_gen`` still stores
    every image token's new V (cache_hook_LLaDA.py)."""
    model = TinyModel()
    P = model.num_image_tokens
    ratio = 0.5 / P  # 0 < ratio, int(P * ratio) == 0
    g = torch.Generator().manual_seed(5)
    t0 = model.initial_tokens(2)
    t1 = t0.clone()
    t1[:, :3] = torch.randint(0, model.codebook_size, (2, 3), generator=g)
    cond = torch.tensor([0, 2])
    cfg = DLLMCacheConfig(
        prompt_interval=100, gen_interval=100, transfer_ratio=ratio, refresh_first_layer=False
    )
    accel = DLLMCache(cfg)
    accel.reset(model, 2)
    with torch.no_grad():
        accel.step(model, _ctx(model, 0, t0, cond))
        h, layer_inputs = model.embed(t1, cond), []
        for cache in accel._layers:  # layer inputs of the cheap step: embedding + cached outputs
            layer_inputs.append(h)
            h = h + cache.attn + cache.mlp
        accel.step(model, _ctx(model, 1, t1, cond))
    for block, cache, h_in in zip(model.blocks, accel._layers, layer_inputs):
        torch.testing.assert_close(cache.kv.v[:, :, :P], block.value(h_in[:, :P]))
    assert accel.counts.partial_forwards == 1 and accel.counts.other_calls == 0


# ------------------------------------------------------------- counts, NaNs, reset
CACHING = [
    lambda: MLCache(MLCacheConfig()),
    lambda: ReCAP(ReCAPConfig(pre_full_iters=2, num_cache_iters=2)),
    lambda: TaylorSeer(TaylorSeerConfig()),
    lambda: DLLMCache(DLLMCacheConfig(gen_interval=3)),
]


@pytest.mark.parametrize("make", CACHING, ids=["ml-cache", "recap", "taylorseer", "dllm-cache"])
def test_counts_nans_and_repeatability(model, make):
    accel = make()
    first = run(model, accel, seed=5)
    counts = accel.counts.as_dict()
    again = run(model, accel, seed=5)  # reset() must clear every cache
    assert torch.equal(first.tokens, again.tokens)
    assert accel.counts.as_dict() == counts
    assert counts["full_forwards"] < first.steps  # never more than vanilla, here strictly fewer
    assert 0.0 < counts["partial_coverage"] <= 1.0 or counts["partial_forwards"] == 0
    assert bool(((first.tokens >= 0) & (first.tokens < model.codebook_size)).all())
    assert bool((first.reveal_step >= 0).all())
    outs = _drive(model, make())
    assert all(bool(torch.isfinite(o.logits).all()) and bool(torch.isfinite(o.features).all()) for o in outs)


def test_bad_configs_are_rejected_clearly():
    with pytest.raises(ValueError, match="cache_ratio"):
        MLCache(MLCacheConfig(cache_ratio=1.0))
    with pytest.raises(ValueError, match="refresh_interval"):
        MLCache(MLCacheConfig(refresh_interval=0))
    with pytest.raises(ValueError, match="num_cache_iters"):
        ReCAP(ReCAPConfig(num_cache_iters=-1))
    with pytest.raises(ValueError, match="interval"):
        TaylorSeer(TaylorSeerConfig(interval=0))
    with pytest.raises(ValueError, match="transfer_ratio"):
        DLLMCache(DLLMCacheConfig(transfer_ratio=1.5))


def test_plugins_register_specs_with_sweeps():
    from accelerators.hooks import dllm_cache, ml_cache, recap, taylorseer
    from bench.config import build_config

    specs = []
    for module in (ml_cache, recap, taylorseer, dllm_cache):
        module.register_accelerators(specs.append)
    assert [s.name for s in specs] == ["ml-cache", "recap", "taylorseer", "dllm-cache"]
    for spec in specs:
        assert 2 <= len(spec.default_sweep) <= 3
        for options in spec.default_sweep:
            spec.factory(build_config(spec.config_cls, options))


# -------------------------------------------------------------------------- helpers
def _record_rows(model, monkeypatch) -> dict[str, dict[int, list[int]]]:
    """Wrap every block's qkv / value / mlp to record, per sampling step, the number of
    query rows each call received (step = number of head calls so far)."""
    rows: dict[str, dict[int, list[int]]] = {"qkv": {}, "value": {}, "mlp": {}}
    state = {"step": 0}
    original_head = model.head

    def head(features, positions=None):
        out = original_head(features, positions)
        state["step"] += 1
        return out

    monkeypatch.setattr(model, "head", head)
    for block in model.blocks:
        for name in rows:
            fn = getattr(block, name)

            def wrapped(h, *args, _fn=fn, _name=name):
                rows[_name].setdefault(state["step"], []).append(h.shape[1])
                return _fn(h, *args)

            monkeypatch.setattr(block, name, wrapped)
    return rows


def _per_layer(expected: dict[int, int], model) -> dict[int, list[int]]:
    """{step: rows} -> {step: [rows] * depth}, the shape ``_record_rows`` produces."""
    return {i: [n] * len(model.blocks) for i, n in expected.items()}
