"""ML-Cache in Lumina-DiMOO's own setting (scope "sequence") on the tiny DiMOO checkpoint.

The expected codes come from a separate re-statement of the reference's rule
(Alpha-VLLM/Lumina-DiMOO ``generators/image_generation_generator.py`` ``generate_image`` with
``use_cache=True`` and ``model/modeling_llada.py``'s K/V and logit caches), written on the LLaDA
component directly, one image at a time, each branch its own unpadded sequence as the reference
runs them: refresh steps run the whole branch and fill its K/V and logit caches; after a step
whose successor is cached, every position of the branch (prompt included) whose max image-code
logit is at or below ``torch.quantile(conf, 1 - cache_ratio)`` is marked; a cached step
recomputes the marked rows only (at their rotary positions, against the cached K/V) and writes
their logits into the cache. The generic loop with ``ml-cache`` (batched, padded, per-image
generators) must give the same codes.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

from accelerators.ml_cache import MLCache, MLCacheConfig, is_refresh_step
from base_models.dimoo import sampler
from base_models.dimoo.plugin import DiMOOPluginConfig, build_dimoo
from base_models.dimoo.testing import write_tiny_checkpoint
from base_models.dimoo.text import build_batch
from bench.config import build_config
from bench.sampling import sample

STEPS = 8
CFG = MLCacheConfig(cache_ratio=0.7, warmup_ratio=0.2, refresh_interval=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("dimoo-mlc"))
    opts = {"checkpoint": str(folder), "resolution": 64, "steps": STEPS}
    return build_dimoo(build_config(DiMOOPluginConfig, opts, owner="dimoo"), torch.device("cpu"))


class _Branch:
    """One branch (conditional or unconditional) of the reference: its own sequence and caches."""

    def __init__(self, model, prompt_ids: list[int]) -> None:
        batch = build_batch([prompt_ids], model.rows, model.cols, model.tokenizer.ids)  # one row: no padding
        self.net, self.model = model.transformer, model
        self.ids, self.positions = batch.ids, batch.positions  # (1, L)
        self.image_pos = batch.image_pos  # (1, P)
        self.codes = slice(model.offset, model.offset + model.codebook_size)
        self.caches = self.logit_cache = self.to_compute = None

    def logits(self, codes: torch.Tensor, refresh: bool) -> torch.Tensor:
        """codes (1, P) sequence ids at the image slots -> image-code logits (1, L, V) of the branch."""
        self.ids = self.ids.scatter(1, self.image_pos, codes)
        if refresh or self.to_compute is None:
            feats, self.caches = self.net.forward_cached(self.ids, self.positions)
            self.logit_cache = self.net.logits(feats, self.codes)
        else:
            rows = self.to_compute.nonzero()[:, 1][None]  # (1, Q) the marked positions
            fresh = self.net.forward_rows(self.ids, rows, self.positions, self.caches)
            self.logit_cache = self.logit_cache.clone()
            self.logit_cache[0, rows[0]] = self.net.logits(fresh, self.codes)[0]
        return self.logit_cache

    def mark(self, cache_ratio: float) -> None:
        """The reference's to-compute mask for the next step, from this step's logit cache."""
        conf = self.logit_cache.max(dim=-1)[0]  # (1, L)
        threshold = torch.quantile(conf.to(torch.float), 1 - cache_ratio, dim=-1, keepdim=True)
        self.to_compute = conf <= threshold


@torch.no_grad()
def reference_ml_cache(model, prompt: int, seed: int, cfg_scale: float = 4.0) -> torch.Tensor:
    """One image by the reference's rule -> (P,) codes."""
    mask_id, p = model.tokenizer.ids.mask, model.num_image_tokens
    cond = _Branch(model, model._prompt_ids[prompt])
    uncond = _Branch(model, model.tokenizer.uncond_ids())
    generator = torch.Generator().manual_seed(seed)
    codes = torch.full((1, p), mask_id, dtype=torch.long)
    for step in range(STEPS):
        refresh = is_refresh_step(step, STEPS, CFG.warmup_ratio, CFG.refresh_interval)
        masked = codes == mask_id
        where = masked.nonzero()[:, 1][None]  # (1, M)
        per_branch = []
        for branch in (cond, uncond):
            logits = branch.logits(codes, refresh)  # (1, L, V)
            image = logits.gather(1, branch.image_pos[..., None].expand(-1, -1, logits.shape[-1]))
            per_branch.append(image.gather(1, where[..., None].expand(-1, -1, logits.shape[-1])).float())
        keep = sampler.keep_count(p, step, STEPS)
        drawn, stay = sampler.step(per_branch[0], keep, 1.0, generator, per_branch[1], cfg_scale)
        codes = codes.scatter(1, where, torch.where(stay, mask_id, drawn + model.offset))
        if step < STEPS - 1 and not is_refresh_step(step + 1, STEPS, CFG.warmup_ratio, CFG.refresh_interval):
            cond.mark(CFG.cache_ratio)
            uncond.mark(CFG.cache_ratio)
    return (codes - model.offset)[0]


def test_ml_cache_native_scope_gives_the_reference_codes(model):
    cond = model.conditions(3, torch.Generator())
    seeds = (4, 5, 6)
    accel = MLCache(CFG)
    got = sample(model, accel, cond, [torch.Generator().manual_seed(s) for s in seeds]).tokens
    assert accel.scope(model) == "sequence" and accel.counts.partial_forwards > 0
    want = torch.stack([reference_ml_cache(model, int(c), s) for c, s in zip(cond, seeds)])
    assert torch.equal(got, want)


def test_ml_cache_native_scope_differs_from_the_image_scope(model):
    """The quantile over the whole sequence (prompt included) selects other rows than the image-only
    scope: the two settings are really different computations (checked on the rows they recompute)."""
    cond = model.conditions(2, torch.Generator())
    seen = {}
    for scope in ("sequence", "image"):
        accel = MLCache(MLCacheConfig(cache_ratio=0.7, warmup_ratio=0.2, refresh_interval=3, scope=scope))
        sample(model, accel, cond, [torch.Generator().manual_seed(s) for s in (1, 2)])
        seen[scope] = accel.counts.partial_positions / accel.counts.partial_forwards
    assert seen["sequence"] < seen["image"]  # image scope recomputes every condition position
