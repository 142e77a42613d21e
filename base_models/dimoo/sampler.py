"""Lumina-DiMOO's sampler policy as pure functions; all randomness from torch.Generators.

Every rule below is the reference's (Alpha-VLLM/Lumina-DiMOO):

- ``generators/image_generation_generator.py`` L91-96 (+ ``utils/generation_utils.py`` L26-28,
  ``cosine_schedule``): after step s of T, keep_n =
  max(1, floor(N0 * cos(pi/2 * (s + 1) / T))) image tokens stay masked (N0 = image tokens masked
  at the start), 0 after the last step; float32 arithmetic (``vq_len.float() * frac``).
- same file L105-118: CFG on the masked positions' logits restricted to the image codes,
  (1 + s) * cond - s * uncond, both branches every step (s = ``cfg_scale``, 4 by default in
  ``config.py`` / ``inference_t2i.py``).
- L122 + ``utils/generation_utils.py`` L31-45 (``gumbel_noise``, ``gumbel_max_sample``): every
  masked position gets a token, argmax(logits / temperature + g), g = -log(-log(u + 1e-20) +
  1e-20), u ~ U[0, 1); temperature 0 is greedy.
- L124-125: confidence = softmax(logits)[sampled] (temperature 1, whatever ``temperature``).
- L133 + ``generation_utils.py`` L48-61 (``mask_by_random_topk``): score = log(conf.clamp_min(1e-20))
  + temperature * g' (fresh Gumbel noise, drawn after the sampling noise); the cut-off is the
  k-th smallest score with k = keep_n clamped to [0, M - 1] (M = masked before the step), and
  every position scoring below it is re-masked. So after a step min(keep_n, M - 1) tokens
  stay masked (the clamp reveals at least one token when keep_n >= M), none after the last step.

Batches: the reference runs one image at a time with one generator. Here ``generator`` may be
one ``torch.Generator`` per row (a list): each row then draws exactly the numbers a batch of
one with that generator draws, so a batch of n gives the tokens of n runs of one.
The reference runs in bfloat16 on a GPU (noise drawn in the logits' dtype); these functions
draw in the dtype of the logits they are given (float32 in tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator]


def keep_count(n0: int, step: int, steps: int) -> int:
    """Image tokens still masked after ``step`` (0-based) of ``steps``, per the schedule."""
    if steps < 1 or not 0 <= step < steps:
        raise ValueError(f"step {step} is outside 0..{steps - 1}")
    if step == steps - 1:
        return 0
    frac = torch.cos(0.5 * math.pi * torch.tensor([(step + 1) / steps]))  # float32, as the reference
    return int((torch.tensor([float(n0)]) * frac).floor().clamp_min(1).long())


def masked_counts(n0: int, steps: int) -> list[int]:
    """Tokens masked after each step when the reference loop runs (the M - 1 clamp included;
    once nothing is masked the reference stops, so the remaining entries are 0)."""
    out, masked = [], n0
    for s in range(steps):
        if masked > 0:
            masked = min(keep_count(n0, s, steps), masked - 1)
        out.append(masked)
    return out


def reveal_counts(n0: int, steps: int) -> list[int]:
    """Tokens revealed by each step (what the generic loop's ``num_to_reveal`` / ReCAP's
    reservations need): n0 - masked after step 0, then the differences; sums to n0."""
    after = masked_counts(n0, steps)
    return [before - now for before, now in zip([n0, *after[:-1]], after)]


def cfg_combine(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """(1 + s) * cond - s * uncond (both (B, M, V))."""
    return (1 + scale) * cond - scale * uncond


def _rand(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype, device) -> Tensor:
    """U[0, 1) of ``shape`` (B, ...): one draw from a single generator, or row i from generator i."""
    if isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=dtype, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} rows")
    return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype, device=device) for g in generator])


def gumbel(
    shape: tuple[int, ...], generator: Generators, dtype: torch.dtype = torch.float32, device="cpu"
) -> Tensor:
    """-log(-log(u + 1e-20) + 1e-20): the reference's Gumbel(0, 1) noise."""
    u = _rand(shape, generator, dtype, device)
    return -torch.log(-torch.log(u + 1e-20) + 1e-20)


def sample_tokens(logits: Tensor, temperature: float, generator: Generators) -> Tensor:
    """Gumbel-max: logits (B, M, V) -> (B, M) argmax(logits / temperature + g); greedy at 0."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    return (logits / temperature + gumbel(logits.shape, generator, logits.dtype, logits.device)).argmax(
        dim=-1
    )


def confidence(logits: Tensor, sampled: Tensor) -> Tensor:
    """softmax(logits)[sampled]: (B, M, V), (B, M) -> (B, M)."""
    return torch.softmax(logits, dim=-1).gather(-1, sampled[..., None]).squeeze(-1)


def remask(keep: int | Tensor, conf: Tensor, temperature: float, generator: Generators) -> Tensor:
    """(B, M) confidences -> (B, M) bool, True = stays masked (``mask_by_random_topk``)."""
    b, m = conf.shape
    score = torch.log(conf.clamp_min(1e-20)) + temperature * gumbel(
        conf.shape, generator, conf.dtype, conf.device
    )
    k = torch.as_tensor(keep, device=conf.device).long().expand(b)[:, None].clamp(0, m - 1)  # (B, 1)
    cut = torch.sort(score, dim=-1).values.gather(1, k)  # (B, 1), the k-th smallest score
    return score < cut


def step(
    logits: Tensor,
    keep: int,
    temperature: float,
    generator: Generators,
    uncond_logits: Tensor | None = None,
    cfg_scale: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One reference step on the M masked positions of each row.

    logits / uncond_logits: (B, M, V) over the image codes at the still-masked positions (in
    sequence order). Returns the sampled codes (B, M) and the re-mask decision (B, M) bool.
    """
    if uncond_logits is not None and cfg_scale > 0:
        logits = cfg_combine(logits, uncond_logits, cfg_scale)
    sampled = sample_tokens(logits, temperature, generator)
    return sampled, remask(keep, confidence(logits, sampled), temperature, generator)


class DiMOOPolicy:
    """Lumina-DiMOO's sampler as a ``bench.protocol.SamplerPolicy`` for the generic loop.

    The rules above, split the way ``bench.sampling.sample`` calls them, so that the loop's
    vanilla run reproduces ``base_models.dimoo.generate.generate`` (the reference loop) code for
    code: ``schedule`` = ``reveal_counts`` (the loop reveals the k best of the M masked
    positions, exactly the ones ``remask`` keeps unmasked); ``draw`` = Gumbel-max at the
    temperature, then log(confidence at temperature 1); ``scores`` = log-confidence +
    temperature * fresh Gumbel noise, drawn after the sampling noise from the same generator(s).
    The loop's guidance is (1 + w) * cond - w * uncond, the reference's ``cfg_combine``.
    ``generator``: one ``torch.Generator``, or one per image (row i draws from generator i).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if temperature < 0:
            raise ValueError(f"DiMOO sampling temperature must be >= 0, got {temperature}")
        self.temperature = temperature

    def schedule(self, num_tokens: int, steps: int) -> list[int]:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        counts = reveal_counts(num_tokens, steps)
        if min(counts) < 1:
            first = counts.index(0)
            raise ValueError(
                f"{steps} DiMOO steps are too many for {num_tokens} image tokens: the cosine keep-count "
                f"schedule has revealed every token after step {first - 1} (step {first} would reveal "
                f"nothing); use fewer steps or a larger resolution"
            )
        return counts

    def draw(self, logits: Tensor, generator: Generators) -> tuple[Tensor, Tensor]:
        sampled = sample_tokens(logits, self.temperature, generator)  # (n, m)
        return sampled, torch.log(confidence(logits, sampled).clamp_min(1e-20))  # (n, m)

    def scores(self, log_conf: Tensor, masked: Tensor, mask: Tensor, step: int, steps: int,
               generator: Generators) -> Tensor:  # fmt: skip
        noise = gumbel(log_conf.shape, generator, log_conf.dtype, log_conf.device)  # (n, m), after draw's
        score = log_conf + self.temperature * noise
        out = torch.full(mask.shape, -math.inf, dtype=score.dtype, device=score.device)  # (n, P)
        return out.scatter(1, masked, score)  # revealed positions stay at -inf
