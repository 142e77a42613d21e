"""``DiMOOModel``: Lumina-DiMOO (LLaDA transformer + tokenizer + VQ decoder) as a
``bench.protocol.BaseModel`` on the generalised block protocol.

Token space of the protocol: image codes in [0, V) (V = the VQ codebook size), ``mask_id`` = V.
In the transformer's vocabulary code c is id c + offset (offset = head width - V, the
reference's ``text_vocab_size``) and the mask is the tokenizer's mask id.

Conditions are (B,) long indices into the model's prompt list (image i gets prompt i mod the
list's length); -1 is the null condition, the "<uncondition>" prompt. Every row is the sequence
of Alpha-VLLM/Lumina-DiMOO ``inference/inference_t2i.py``: prompt ids, BOA, BOI, H/f rows of W/f
image tokens (f the VQ's downsampling factor, 16 for Lumina-DiMOO) each followed by a newline, EOI, EOA (``text.build_batch``), left-padded to one
length L for every batch of this model (``seq_len``: the longest prompt, the unconditional one
included, plus the image part); the padding is masked out of attention and the rotary positions
start at 0 at each row's first real token, so a row's result does not depend on its batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from base_models.dimoo.llada import LLaDAModel
from base_models.dimoo.sampler import DiMOOPolicy
from base_models.dimoo.text import DiMOOTokenizer, image_part, image_positions
from base_models.dimoo.vqvae import code_offset, decode_codes
from bench.protocol import SamplingSettings, SequenceLayout, prompt_conditions

# Lumina-DiMOO's text-to-image defaults (``inference/inference_t2i.py`` / ``config.py``): 64 steps,
# cfg_scale 4 on every step (no ramp), temperature 1. The MaskGIT-only fields are not used by
# ``DiMOOPolicy`` (its own keep-count schedule and Gumbel re-masking).
DIMOO_SAMPLING = SamplingSettings(steps=64, cfg_weight=4.0, cfg_schedule="constant", temperature=1.0)

# prompts for smoke runs when no prompt file is given
BUILTIN_PROMPTS = (
    "A red fox sitting in a snowy forest at dawn.",
    "A bowl of ramen with a soft-boiled egg, studio photo.",
    "An astronaut riding a horse on the moon, digital art.",
    "A lighthouse on a rocky coast during a storm.",
    "A watercolor painting of a small village by a lake.",
    "A close-up photo of a hummingbird drinking from a flower.",
    "A futuristic city skyline at night with neon lights.",
    "A cozy reading nook with a cat sleeping on a blanket.",
)


def read_prompt_file(path: str) -> list[str]:
    """One prompt per line (surrounding whitespace stripped, empty lines skipped)."""
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one per line)")
    return prompts


@dataclass
class _CachedLayout:
    cond: Tensor  # the (B,) tensor the layout was built for (compared with ``is``)
    layout: SequenceLayout
    ids: Tensor  # (B, L) sequence ids with the image slots all mask


class DiMOOModel:
    """Lumina-DiMOO exposed through the block protocol (see the module docstring).

    transformer: the LLaDA model; tokenizer: the folder's; vqvae: the diffusers VQModel (None:
    tokens only, ``decode`` refuses); codebook: V (default: the vqvae's); rows, cols: the token
    grid (resolution / f, f the VQ's downsampling factor); prompts: the prompt list conditions index into.
    """

    def __init__(
        self,
        transformer: LLaDAModel,
        tokenizer: DiMOOTokenizer,
        vqvae: Any,
        codebook: int,
        rows: int,
        cols: int,
        prompts: list[str] | tuple[str, ...] = BUILTIN_PROMPTS,
        name: str = "dimoo",
        default_sampling: SamplingSettings | None = None,
        prompt_record: dict[str, Any] | None = None,
    ) -> None:
        self.transformer = transformer.eval()
        self.tokenizer = tokenizer
        self.vqvae = vqvae
        self.name = name
        self.dataset = None  # a text-to-image model: no single dataset
        self.rows, self.cols = rows, cols
        self.num_image_tokens = rows * cols
        self.codebook_size = codebook
        self.mask_id = codebook  # protocol token space: codes [0, V), mask V
        self.offset = code_offset(transformer.cfg.table_size, codebook)  # id of code 0
        self.dim = transformer.cfg.d_model
        self.blocks = transformer.blocks
        self.default_sampling = default_sampling or DIMOO_SAMPLING
        self._uncond_ids = tokenizer.uncond_ids()
        self._image_part = image_part(rows, cols, tokenizer.ids)  # [BOA, BOI, rows.., EOI, EOA]
        self._fingerprint: str | None = None
        self.use_prompts(list(prompts), prompt_record or {"source": "built-in", "count": len(prompts)})

    @property
    def device(self) -> torch.device:
        return self.transformer.head_weight.device

    def to(self, device: torch.device | str) -> DiMOOModel:
        self.transformer.to(device)
        if self.vqvae is not None:
            self.vqvae.to(device)
        self._layout = None
        return self

    # ---- prompts
    def use_prompts(self, prompts: list[str], record: dict[str, Any]) -> None:
        """Condition on ``prompts`` from now on (condition i = prompts[i]); ``record`` is what
        ``prompt_record()`` returns (run.json provenance). L grows or shrinks to fit the longest."""
        if not prompts:
            raise ValueError(f"{self.name}: the prompt list is empty")
        self.prompts = [str(p) for p in prompts]
        self._record = dict(record)
        self._prompt_ids = [self.tokenizer.prompt_ids(p) for p in self.prompts]
        self._prompt_len = max(len(p) for p in [*self._prompt_ids, self._uncond_ids])  # left-padded to this
        self.seq_len = self._prompt_len + len(self._image_part)
        self._layout: _CachedLayout | None = None

    def condition_prompts(self, cond: Tensor) -> list[str]:
        """The prompt text of every condition ((n,) indices; -1, the null condition: "")."""
        return [self.prompts[i] if i >= 0 else "" for i in cond.tolist()]

    def prompt_record(self) -> dict[str, Any]:
        return dict(self._record)

    # ---- conditions
    def conditions(self, n: int, generator: torch.Generator) -> Tensor:
        """Image i gets prompt i mod len(prompts) (deterministic: the prompt set is the sample)."""
        return prompt_conditions(n, len(self.prompts)).to(self.device)

    def null_conditions(self, cond: Tensor) -> Tensor:
        return torch.full_like(cond, -1)

    def initial_tokens(self, n: int) -> Tensor:
        return torch.full((n, self.num_image_tokens), self.mask_id, dtype=torch.long, device=self.device)

    # ---- layout
    def prompt_token_ids(self, cond: Tensor) -> list[list[int]]:
        """The token ids of each row's prompt (the chat template included; -1: the unconditional
        prompt), before padding: what the reference tokenises for that row."""
        out = []
        for c in cond.tolist():
            if c >= len(self.prompts):
                raise IndexError(f"{self.name}: condition {c} is outside the {len(self.prompts)} prompts")
            out.append(self._uncond_ids if c < 0 else self._prompt_ids[c])
        return out

    def sequence_layout(self, cond: Tensor) -> SequenceLayout:
        """The left-padded sequences of the rows ``cond`` (B,); cached for the last ``cond`` tensor
        (the loop passes the same one at every step)."""
        return self._cached_layout(cond).layout

    def _cached_layout(self, cond: Tensor) -> _CachedLayout:
        if self._layout is None or self._layout.cond is not cond:
            self._layout = _CachedLayout(cond, *self._build_layout(cond))
        return self._layout

    def _build_layout(self, cond: Tensor) -> tuple[SequenceLayout, Tensor]:
        B, L, Lp, P = cond.shape[0], self.seq_len, self._prompt_len, self.num_image_tokens
        device = cond.device
        prompts = self.prompt_token_ids(cond)
        lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
        prompt_ids = torch.zeros(B, Lp, dtype=torch.long)  # pad id 0, never attended to
        for r, p in enumerate(prompts):
            prompt_ids[r, Lp - len(p) :] = torch.tensor(p, dtype=torch.long)
        part = torch.tensor(self._image_part, dtype=torch.long).expand(B, -1)
        ids = torch.cat([prompt_ids, part], dim=1).to(device)  # (B, L)
        index = torch.arange(L, device=device).expand(B, L)
        start = (Lp - lengths)[:, None]  # (B, 1) first real token of each row
        key_mask = index >= start  # (B, L)
        position_ids = (index - start).clamp_min(0)  # rotary positions, 0 at the first real token
        image_pos = image_positions(Lp, self.rows, self.cols).to(device)  # (P,), same for every row
        is_image = torch.zeros(L, dtype=torch.bool, device=device)
        is_image[image_pos] = True
        other = torch.arange(L, device=device)[~is_image]  # (L - P,) prompt, specials, padding
        prompt_mask = key_mask & (index < Lp) & (cond >= 0)[:, None]  # text before BOA, cond. rows
        layout = SequenceLayout(
            seq_len=L,
            num_image_tokens=P,
            image_positions=image_pos.expand(B, P),
            condition_positions=other.expand(B, L - P),
            position_ids=position_ids,
            key_mask=key_mask,
            prompt_mask=prompt_mask,
        )
        return layout, ids

    def _sequence_ids(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """(B, P) protocol tokens -> (B, L) transformer ids: codes + offset, mask -> mask id."""
        entry = self._cached_layout(cond)
        codes = torch.where(tokens == self.mask_id, self.tokenizer.ids.mask, tokens + self.offset)
        return entry.ids.scatter(1, entry.layout.image_positions, codes)

    # ---- block protocol
    def embed(self, tokens: Tensor, cond: Tensor, positions: Tensor | None = None) -> Tensor:
        """tokens (B, P), cond (B,) -> (B, L, D) word embeddings (rotary enters in the blocks);
        with ``positions`` (B, Q) only those sequence rows: (B, Q, D)."""
        ids = self._sequence_ids(tokens, cond)  # (B, L)
        if positions is not None:
            ids = torch.gather(ids, 1, positions)
        return self.transformer.embed(ids)

    def embed_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        """Image codes (B, K) -> their word embeddings (B, K, D); positions enter through the
        blocks' rotary embeddings, so they are not used here."""
        return self.transformer.embed(ids + self.offset)

    def final_features(self, h: Tensor) -> Tensor:
        return self.transformer.final_features(h)

    def head(self, features: Tensor, positions: Tensor | None = None) -> Tensor:
        """(B, Q, D) -> (B, Q, V): the head rows of the image codes (the reference's
        ``logits[..., offset:offset + V]``), scaled as the reference when ``scale_logits``."""
        return self.transformer.logits(features, slice(self.offset, self.offset + self.codebook_size))

    def block_config(self) -> dict[str, Any]:
        """The transformer blocks' options, LLaDA ``config.json`` names (optional protocol method:
        DiMOO-Shortcut builds blocks of the same kind at a reduced width from them)."""
        cfg = self.transformer.cfg
        return {"n_heads": cfg.n_heads, "n_kv_heads": cfg.kv_heads, "mlp_hidden_size": cfg.hidden_size,
                "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
                "rope_full_precision": cfg.rope_full_precision}  # fmt: skip

    def sequence_logits(self, features: Tensor) -> Tensor:
        """(B, Q, D) features of *any* sequence rows -> (B, Q, V) image-code logits: the head is
        the same at every position (the reference's ``logit_cache`` holds them for the whole
        sequence; ML-Cache's native scope ranks prompt positions by them too)."""
        return self.head(features)

    def sampler_policy(self, settings: SamplingSettings) -> DiMOOPolicy:
        return DiMOOPolicy(settings.temperature)

    # ---- pixels
    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        if self.vqvae is None:
            raise RuntimeError(f"{self.name}: no vqvae loaded, cannot decode tokens to images")
        codes = tokens.clamp(0, self.codebook_size - 1).to(self.vqvae.device)
        return decode_codes(self.vqvae, codes, self.rows, self.cols)

    def fingerprint(self) -> str:
        """sha256 over the transformer's (and vqvae's) tensors as loaded (dtype included: bfloat16
        on a GPU, float32 on the CPU), first 16 hex digits."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            modules = [self.transformer] + ([self.vqvae] if self.vqvae is not None else [])
            for m in modules:
                for k, v in sorted(m.state_dict().items()):
                    h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
                    h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint
