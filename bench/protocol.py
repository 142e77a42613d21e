"""Contracts between the core, base models and accelerators.

Everything here is model-agnostic: the core (``bench/``) and every accelerator are
written against these protocols only, never against a concrete model.

Shapes used throughout:
    B  batch rows the blocks see (with classifier-free guidance: 2 x images, the
       conditional stream stacked on top of the unconditional one)
    L  sequence length the transformer blocks see (image tokens + condition tokens)
    P  number of image tokens; where they sit in the sequence is the batch's
       ``SequenceLayout`` (by default positions [0, P), the condition after them)
    D  feature width, H heads, Dh = D // H
    V  image codebook size (logits never include the mask token)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: the plugin manager imports this module without torch
    import torch
    from torch import Tensor


# --------------------------------------------------------------------------- blocks
@runtime_checkable
class Block(Protocol):
    """One pre-norm transformer block: ``h = h + attn(h); h = h + mlp(h)``.

    The block is split into primitives so that an accelerator can run it on any
    subset of query positions while attending to cached K/V of all positions.
    A class that subclasses ``Block`` explicitly inherits the default ``value``.
    """

    num_heads: int

    def qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Attention pre-norm + in-projection. h: (B, Q, D) -> q, k, v each (B, H, Q, Dh).

        A position-aware block (rotary embeddings) takes ``qkv(h, position_ids)``, (B, Q) the
        positions of h's rows (``SequenceLayout.position_ids``); the core passes them only
        when the batch's layout has position ids. K/V may have fewer heads (GQA)."""
        ...

    def value(self, h: Tensor) -> Tensor:
        """Pre-norm + value projection only. (B, Q, D) -> (B, H, Q, Dh).

        The default takes v from ``qkv`` (computing q and k too); a block overrides it when it
        can project V alone for less (e.g. the value rows of a fused in-projection: a third of
        the cost). dLLM-Cache's V-verify calls it on every image token of a cached step.
        """
        return self.qkv(h)[2]

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Scaled dot-product attention + out-projection.

        q: (B, H, Q, Dh); k, v: (B, H, L', Dh) -> (B, Q, D), the attention branch
        output *before* the residual add. With padding the core calls
        ``attend(q, k, v, key_mask)``, key_mask (B, L') bool, True = a real key.
        """
        ...

    def mlp(self, h: Tensor) -> Tensor:
        """Pre-norm MLP branch. (B, Q, D) -> (B, Q, D), before the residual add."""
        ...


@dataclass(frozen=True)
class SequenceLayout:
    """Where one batch's tokens sit in the sequences the blocks see (B rows, L positions).

    The default (every field None, MaskGIT and the class-conditional models): image token j at
    sequence position j, the condition tokens at [P, L), no padding, and blocks that take no
    position input. A model whose sequences differ per row (Lumina-DiMOO: prompt, BOA, BOI,
    rows of image tokens each followed by a newline, EOI, EOA; the prompts of one batch of
    different lengths, padded) returns its layout from the optional method
    ``sequence_layout(cond) -> SequenceLayout`` (``bench.forward.layout_of``).

    image_positions: (B, P) long, the sequence index of image token j in every row.
    condition_positions: (B, C) long, the other indices accelerators may recompute as "the
        condition" (prompt, special tokens, padding); None: [P, L).
    position_ids: (B, L) long, the position each index has for position-aware blocks (rotary
        embeddings): ``bench.forward`` passes the rows' ids to ``Block.qkv(h, ids)``, so a
        partial step on a subset of rows gets exactly a full forward's angles. None: the blocks
        take no position input and are called ``qkv(h)``.
    key_mask: (B, L) bool, True = a real key; padding keys are never attended to
        (``Block.attend(q, k, v, key_mask)``). None: every key is real, ``attend(q, k, v)``.
    prompt_mask: (B, L) bool, True at the text a conditional row is generated from (DiMOO:
        everything before BOA, its chat template included); False in unconditional rows (their
        "<uncondition>" prompt conditions nothing), at padding and in the image part. Learned
        accelerators that attend to the prompt read it (DiMOO-Shortcut's cross-attention keys).
        None: no text prompt (class-conditional models).
    """

    seq_len: int
    num_image_tokens: int
    image_positions: Tensor | None = None
    condition_positions: Tensor | None = None
    position_ids: Tensor | None = None
    key_mask: Tensor | None = None
    prompt_mask: Tensor | None = None

    @property
    def image_first(self) -> bool:
        """True for the default layout: image tokens at [0, P) (slices instead of gathers)."""
        return self.image_positions is None


@dataclass
class LayerKV:
    """Cached keys and values of one block for all L positions: (B, H, L, Dh) each."""

    k: Tensor
    v: Tensor


# ---------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SamplingSettings:
    """How the generic loop samples (MaskGIT-pytorch v1 semantics by default).

    steps: N, number of reveal steps. More steps: slower, usually better.
    cfg_weight: classifier-free guidance weight w; logits = (1 + w') l_c - w' l_u.
        0 disables guidance and halves the cost (one stream).
    cfg_schedule: "linear" (w' = w * i / (N - 1), MaskGIT-pytorch) or "constant".
    mask_schedule: "arccos" | "cosine" | "linear": how many tokens each step reveals.
    temperature: softmax temperature for token sampling (logits are divided by it).
    gumbel_temperature: scale of the Gumbel noise added to log-confidence, decayed
        linearly to 0 over the steps (MaskGIT-pytorch ``r_temp``).
    reveal_policy: "confidence" (MaskGIT) or "halton" (Halton-MaskGIT fixed order).
    """

    steps: int = 12
    cfg_weight: float = 3.0
    cfg_schedule: str = "linear"
    mask_schedule: str = "arccos"
    temperature: float = 1.0
    gumbel_temperature: float = 4.5
    reveal_policy: str = "confidence"


class SamplerPolicy(Protocol):
    """How the loop turns a step's guided logits into revealed tokens: the base model's rule.

    The default is MaskGIT-pytorch's (``bench.sampling.MaskGITPolicy``); a model with another
    rule returns its own from the optional method ``sampler_policy(settings) -> SamplerPolicy``
    (Lumina-DiMOO: Gumbel-max sampling, its cosine keep-count schedule, re-masking by
    log p + temperature * Gumbel). The loop keeps everything else: classifier-free guidance
    per ``SamplingSettings``, reservations (ReCAP), the Halton order, the bookkeeping.
    ``generator`` is what the caller passed to ``bench.sampling.sample``: one
    ``torch.Generator``, or one per image when the policy supports it (a batch of n then gives
    the tokens of n runs of one).
    """

    def schedule(self, num_tokens: int, steps: int) -> list[int]:
        """How many tokens each of ``steps`` steps reveals (each >= 1, sums to num_tokens);
        a clear ValueError when ``steps`` cannot be honoured."""
        ...

    def draw(self, logits: Tensor, generator: Any) -> tuple[Tensor, Tensor]:
        """logits (n, m, V) float32, guided, at the m still-masked positions -> the drawn code
        of every position (n, m) and its log-confidence (n, m)."""
        ...

    def scores(self, log_conf: Tensor, masked: Tensor, mask: Tensor, step: int, steps: int,
               generator: Any) -> Tensor:  # fmt: skip
        """Reveal scores (n, P): the positions with the highest reveal first. log_conf (n, m)
        at ``masked`` (n, m) positions; mask (n, P) True = still masked (-inf elsewhere)."""
        ...


# -------------------------------------------------------------------- base model
@runtime_checkable
class BaseModel(Protocol):
    """A masked image generation model exposed through the block protocol.

    A full forward is::

        h = embed(tokens, cond)                  # (B, L, D)
        for block in blocks: h = h + block.attend(*block.qkv(h)); h = h + block.mlp(h)
        f = final_features(h)                    # (B, L, D)  "last-layer features"
        logits = head(f[:, :P])                  # (B, P, V)

    ``bench.forward`` implements this (and its partial variants) once for all models.
    Where the image positions sit is the batch's ``SequenceLayout`` (default: [0, P)).

    Optional methods, looked up with ``getattr`` (a class-conditional model needs none):
    ``sequence_layout(cond) -> SequenceLayout`` for the stacked rows ``cond`` (B,) (the same
    object for the same ``cond`` tensor is welcome: the loop asks at every step);
    ``sampler_policy(settings) -> SamplerPolicy``; ``sequence_logits(features) -> (B, Q, V)``,
    the head's image-code logits at *any* sequence rows (features (B, Q, D)), equal to ``head``
    at image rows (ML-Cache's native scope ranks every position of the sequence by them);
    ``condition_prompts(cond)`` and
    ``prompt_record()`` (text-to-image, see ``condition_prompts``); ``block_config() -> dict``,
    the options of the transformer blocks for learned accelerators that build blocks of the same
    kind (LLaDA ``config.json`` names: n_heads, n_kv_heads, mlp_hidden_size, rope_theta,
    rms_norm_eps, rope_full_precision; DiMOO-Shortcut copies them at a reduced width);
    ``default_metrics() -> list[str]``, the metric names a run on this model computes when the
    user names none (``migm-bench run`` without ``--metrics``; without the method: every metric
    registered as default), e.g. a text-to-image model trained here lists its CLIPScore and
    attribute metrics; ``clip_weights() -> (model, weights)``, the model's own CLIP for
    ``clip_score`` when ``$MIGM_CLIP_WEIGHTS`` is not set: an open_clip model name or the path of
    a model-config JSON, and the path of its local weights file (what ``$MIGM_CLIP_MODEL`` and
    ``$MIGM_CLIP_WEIGHTS`` give otherwise).
    """

    name: str
    seq_len: int  # L
    num_image_tokens: int  # P
    codebook_size: int  # V
    mask_id: int  # token id of [MASK] in the image-token vocabulary
    dim: int  # D
    blocks: Sequence[Block]
    default_sampling: SamplingSettings
    # what the model was trained on, e.g. "fashion-mnist", "imagenet"; None: no single
    # dataset (or not told). Metrics with real data or a dataset-specific feature network
    # check it (``bench.distribution_metrics.require_dataset``) and refuse other models.
    dataset: str | None

    def conditions(self, n: int, generator: torch.Generator) -> Tensor:
        """n conditions (class labels now, prompts later) drawn from ``generator``."""
        ...

    def null_conditions(self, cond: Tensor) -> Tensor:
        """The unconditional counterpart of ``cond`` for classifier-free guidance."""
        ...

    def initial_tokens(self, n: int) -> Tensor:
        """The all-mask start: (n, P) long filled with ``mask_id``."""
        ...

    def embed(self, tokens: Tensor, cond: Tensor, positions: Tensor | None = None) -> Tensor:
        """Token + position embedding (and any input layers).

        tokens (B, P) image tokens in image order, cond (B,) -> (B, L, D) in sequence order
        (the layout of ``cond``); with ``positions`` (B, Q) (sequence positions) only those
        rows are computed and returned: (B, Q, D).
        """
        ...

    def embed_tokens(self, ids: Tensor, positions: Tensor) -> Tensor:
        """Raw token + position embedding of image tokens (no input layers).

        ids, positions: (B, K) -> (B, K, D). Used by learned accelerators (the
        shortcut embeds newly revealed tokens with the base model's own tables).
        """
        ...

    def final_features(self, h: Tensor) -> Tensor:
        """Last layers after the blocks. (B, Q, D) -> (B, Q, D)."""
        ...

    def head(self, features: Tensor, positions: Tensor | None = None) -> Tensor:
        """Features of image positions -> logits over the codebook.

        features: (B, Q, D) at image ``positions`` (B, Q) (image indices j in [0, P), not
        sequence positions); None means all P image positions in order. Returns (B, Q, V).
        """
        ...

    def decode(self, tokens: Tensor) -> Tensor:
        """(n, P) image tokens -> (n, C, H, W) images in [0, 1]."""
        ...

    def fingerprint(self) -> str:
        """A short hash of the weights (binds trained accelerators to this model)."""
        ...


# ------------------------------------------------------------------- accelerator
@dataclass
class StepContext:
    """What the sampling loop hands an accelerator at every step.

    All tensors are for the stacked batch the model sees (B rows; with CFG the
    first half is the conditional stream, the second the unconditional one).
    """

    step: int  # i in [0, N)
    num_steps: int  # N
    tokens: Tensor  # (B, P) long, mask_id where still masked
    mask: Tensor  # (B, P) bool, True = still masked
    cond: Tensor  # (B,) conditions of every row (null condition for the uncond. stream)
    streams: int  # 2 with classifier-free guidance, else 1
    revealed_positions: Tensor | None  # (B, K) positions revealed at step i-1 (None at i=0)
    revealed_ids: Tensor | None  # (B, K) token ids revealed at step i-1
    prev_features: Tensor | None  # (B, L, D) last-layer features of step i-1 (None at i=0)
    num_to_reveal: int = 0  # how many tokens this step will reveal per row
    # (B, R) positions an earlier step reserved (``StepOutput.reserve_steps``) and not yet
    # revealed, in the order they will be revealed; None when nothing is reserved
    reserved_positions: Tensor | None = None


@dataclass
class StepOutput:
    """logits: (B, P, V) for this step. features: (B, L, D) last-layer features
    (what the next step receives as ``prev_features``); None if not available.

    reserve_steps: m > 0 asks the loop to choose *now*, by this step's confidence, the
    positions the next m steps will reveal (as many as the schedule gives them), and to
    reveal exactly those, best first, in those steps (their tokens are still sampled from
    each step's own logits). Later steps see them as ``StepContext.reserved_positions``.
    Used by ReCAP (a full step fixes the positions a group of cheap local steps reveals).
    """

    logits: Tensor
    features: Tensor | None = None
    reserve_steps: int = 0


@dataclass
class Counts:
    """Model-call bookkeeping an accelerator reports (per generated batch).

    full_forwards: base-model forwards over all positions (both CFG streams = 1).
    partial_forwards: base-model forwards over a subset of query positions.
    partial_positions: sum over partial forwards of the fraction of positions they
        covered (so partial_positions / partial_forwards is the mean coverage).
    other_calls: calls to anything else (e.g. a learned shortcut network).
    """

    full_forwards: int = 0
    partial_forwards: int = 0
    partial_positions: float = 0.0
    other_calls: int = 0

    def as_dict(self) -> dict[str, float]:
        cover = self.partial_positions / self.partial_forwards if self.partial_forwards else 0.0
        return {
            "full_forwards": self.full_forwards,
            "partial_forwards": self.partial_forwards,
            "partial_coverage": cover,
            "other_calls": self.other_calls,
        }


class Accelerator(Protocol):
    """One acceleration method. Built by its plugin from a frozen config dataclass.

    The loop calls ``reset`` before every batch, ``num_steps`` to decide N, then
    ``step`` once per step. ``counts`` accumulates since the last ``reset``.
    ``bench.accelerator_base.AcceleratorBase`` (optional) implements all but ``step``.
    """

    config: Any
    counts: Counts

    def num_steps(self, default_steps: int) -> int: ...

    def reset(self, model: BaseModel, batch_rows: int) -> None: ...

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput: ...


class AcceleratorWrapper:
    """An accelerator that forwards everything to ``inner``: the core's observers (timers,
    feature and NaN taps) subclass it and override ``reset`` / ``step`` only."""

    def __init__(self, inner: Accelerator) -> None:
        self.inner = inner

    @property
    def config(self) -> Any:
        return self.inner.config

    @property
    def counts(self) -> Counts:
        return self.inner.counts

    def num_steps(self, default_steps: int) -> int:
        return self.inner.num_steps(default_steps)

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        self.inner.reset(model, batch_rows)

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        return self.inner.step(model, ctx)


# ------------------------------------------------------------------------ metrics
REFERENCES = ("data", "vanilla", "condition")


@dataclass(frozen=True)
class MetricInfo:
    """name, unit, higher_is_better, and what the metric compares against:
    "data" (real images), "vanilla" (vanilla output at the same seed) or
    "condition" (the requested class / prompt). label: how tables and figures name it,
    saying what it is computed with (e.g. "FID (Fashion classifier)": a bare "FID" reads as
    Inception FID); empty: derived from the name ("class_accuracy" -> "class accuracy").
    The runner records it in run.json, where ``bench.plots`` reads it.

    A metric may also offer its uncertainty over the image sample (``bench.metrics.metric_interval``):
    ``per_image(generated, ctx) -> (n,) tensor`` when it is the mean of per-image values, or
    ``resampled(generated, ctx, indices) -> list[float]``, its value on each row of image
    indices (R, n) drawn with replacement, for set-level metrics (FID, KID, IS)."""

    name: str
    unit: str
    higher_is_better: bool
    reference: str
    label: str = ""

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"metric {self.name!r}: reference must be one of {REFERENCES}")
        if not self.label:
            object.__setattr__(self, "label", default_metric_label(self.name))  # frozen: set once, here


def default_metric_label(name: str) -> str:
    """A metric's label when its spec gives none: its name in words ("token_agreement" ->
    "token agreement"); also how figures name metrics of runs that recorded no label."""
    return name.replace("_", " ")


@dataclass
class GeneratedBatch:
    """What the runner hands metrics: one configuration's output for all images.

    prompts: the text prompt of every image, for text-to-image metrics (CLIPScore,
    ImageReward); None for class-conditional models. The runner fills it from the base
    model's optional ``condition_prompts(cond) -> list[str]`` (see ``condition_prompts``).
    """

    images: Tensor  # (n, C, H, W) in [0, 1]
    tokens: Tensor  # (n, P)
    cond: Tensor  # (n,)
    features: Tensor | None = None  # (n, L, D) final-step conditional features
    extra: dict[str, Any] = field(default_factory=dict)
    prompts: list[str] | None = None  # (n,) prompt of each image; None: not text-to-image


def condition_prompts(model: Any, cond: Tensor) -> list[str] | None:
    """The prompt of every condition in ``cond`` (n,), from the base model's optional method
    ``condition_prompts(cond) -> list[str]`` (text-to-image models implement it; the
    conditions stay a tensor, e.g. indices into the model's prompt list). None for models
    without it (class-conditional). A text-to-image model may also offer ``prompt_record()
    -> dict`` (e.g. ``metrics.prompts.PromptSelection.record()``): the runner stores it, with a
    hash of the prompts used, under "prompts" in run.json."""
    fn = getattr(model, "condition_prompts", None)
    if fn is None:
        return None
    prompts = [str(p) for p in fn(cond)]
    if len(prompts) != len(cond):
        raise ValueError(f"condition_prompts returned {len(prompts)} prompts for {len(cond)} conditions")
    return prompts


class PromptsUnsupported(TypeError):
    """``--prompts`` given for a base model that cannot take prompts (no ``use_prompts``)."""


def use_prompts(model: Any, prompts: list[str], record: dict[str, Any]) -> None:
    """Hand a text-to-image base model the prompts a run chose (``migm-bench run --prompts``)
    through its optional method ``use_prompts(prompts: list[str], record: dict) -> None``.

    What the method must do (``prompt_conditions`` helps): from then on the model's
    ``conditions(n, generator)`` are ``prompt_conditions(n, len(prompts))``, i.e. image i gets
    prompt ``i % len(prompts)``, in order, whatever the generator; ``condition_prompts(cond)``
    returns ``prompts[c]`` for each c; and ``prompt_record()`` returns ``record`` (JSON-able:
    the spec, set, filters, file hash and a sha256 of the prompts). The runner checks the first
    two at start-up. Without a call, a text-to-image model uses its own default prompts.
    PromptsUnsupported (one line) for a model without the method (class-conditional)."""
    fn = getattr(model, "use_prompts", None)
    if fn is None:
        name = getattr(model, "name", type(model).__name__)
        raise PromptsUnsupported(
            f"base model {name!r} does not take prompts (it has no use_prompts method; "
            "--prompts is for text-to-image base models)"
        )
    if not prompts:
        raise ValueError("use_prompts needs at least one prompt")
    fn(list(prompts), dict(record))


def prompt_conditions(n: int, count: int) -> Tensor:
    """(n,) long conditions of a model given ``count`` prompts: 0, 1, ..., count - 1, 0, 1, ...
    (image i gets prompt i mod count)."""
    import torch  # here: the plugin manager imports this module without torch

    return torch.arange(n, dtype=torch.long) % count
