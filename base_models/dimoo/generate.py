"""A standalone Lumina-DiMOO text-to-image sampler: the reference loop, batched.

Alpha-VLLM/Lumina-DiMOO ``generators/image_generation_generator.py`` ``generate_image`` (without
its ML-Cache branch), with the policy of ``base_models.dimoo.sampler``. It is the oracle the
generalised ``bench/sampling.py`` must reproduce for the ``vanilla`` accelerator: same seeds,
same codes. Differences from the reference, on purpose: a batch of n images runs as one
left-padded batch of 2n sequences (n conditional, n unconditional) with the padding mask
applied, and image i draws its noise from ``generators[i]``, so a batch of n gives the codes of n
runs of one (the reference asserts a batch of one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from base_models.dimoo import sampler
from base_models.dimoo.llada import LLaDAModel
from base_models.dimoo.text import SpecialIds, build_batch


@torch.no_grad()
def generate(
    model: LLaDAModel,
    prompts: Sequence[list[int]],
    uncond: list[int],
    rows: int,
    cols: int,
    ids: SpecialIds,
    codebook: int,
    generators: Sequence[torch.Generator],
    steps: int = 64,
    cfg_scale: float = 4.0,
    temperature: float = 1.0,
) -> Tensor:
    """Token ids of n prompts (+ the unconditional prompt) -> (n, rows * cols) image codes."""
    n, p = len(prompts), rows * cols
    if len(generators) != n:
        raise ValueError(f"{len(generators)} generators for {n} prompts (one per image)")
    guided = cfg_scale > 0
    batch = build_batch(list(prompts) + ([uncond] * n if guided else []), rows, cols, ids)
    device = model.head_weight.device
    seq, pos, key_mask = batch.ids.to(device), batch.positions.to(device), batch.key_mask.to(device)
    image_pos = batch.image_pos.to(device)  # (S, P), S = 2n or n streams
    offset = model.cfg.table_size - codebook
    codes = torch.full((n, p), ids.mask, dtype=torch.long, device=device)  # sequence ids at image slots
    for s in range(steps):
        masked = codes == ids.mask  # (n, P), the same count M in every row
        m = int(masked[0].sum())
        if m == 0:
            break  # the reference stops once nothing is masked
        keep = sampler.keep_count(p, s, steps)
        seq = seq.scatter(1, image_pos, codes.repeat(seq.shape[0] // n, 1))
        feats = model(seq, pos, key_mask)  # (S, L, D)
        img = torch.gather(feats, 1, image_pos[..., None].expand(-1, -1, feats.shape[-1]))  # (S, P, D)
        logits = model.logits(img, slice(offset, offset + codebook)).float()  # (S, P, V)
        where = masked.nonzero()[:, 1].view(n, m)  # (n, M) masked positions, in sequence order
        pick = where[..., None].expand(-1, -1, codebook)
        cond = torch.gather(logits[:n], 1, pick)  # (n, M, V)
        unc = torch.gather(logits[n:], 1, pick) if guided else None
        sampled, stay = sampler.step(cond, keep, temperature, list(generators), unc, cfg_scale)
        new = torch.where(stay, ids.mask, sampled + offset)  # (n, M)
        codes = codes.scatter(1, where, new)
    return codes - offset
