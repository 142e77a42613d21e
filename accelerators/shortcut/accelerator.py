"""``shortcut``: MIGM-Shortcut inference, B full steps out of N, a learned shortcut in between.

Reference: Zhu et al., arXiv 2602.23996; Kaiwen-Zhu/MIGM-Shortcut,
``MaskGIT-Shortcut/Trainer/vit.py`` (``MaskGIT.sample_shortcut``). A full step is the
vanilla base-model forward of both CFG streams and yields the last-layer features. On the
other steps the shortcut network maps the previous step's features (both streams, the rows
of the stacked batch), the tokens that step revealed and the mask ratio (fraction of image
tokens still masked, ``mask.float().mean()`` in the reference) to the next features, and the
logits come from the base model's own head. Which steps are full: see
``accelerators.shortcut.schedule``. B = N never calls the shortcut (vanilla exactly).

Weights are per base model (bound by its fingerprint): the default file for base model
``<name>`` is ``accelerators/shortcut/weights/<name>_shortcut.safetensors``, and
``<name>_shortcut_nocross.safetensors`` for the ``nocross`` ablation variant. The file says which
network it holds (``accelerators.shortcut.networks``): MaskGIT-Shortcut, or DiMOO-Shortcut for a
base model with its own sequence layout (Lumina-DiMOO: ``generate_image_shortcut`` in
``DiMOO-Shortcut/generators/image_generation_generator.py``), whose step reads the features of the
whole padded stream, cross-attends to the revealed tokens and the prompt
(``accelerators.shortcut.dimoo_inputs``) and gives the logits of the image positions through the
base model's head.

Registered (with the ``shortcut collect`` / ``train`` / ``cost`` / ``overhead`` commands) by
``accelerators.shortcut.hooks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from accelerators.shortcut.dimoo_inputs import predict_step
from accelerators.shortcut.dimoo_model import DiMOOShortcutNet
from accelerators.shortcut.networks import load_network, trained_without_cross_attention
from accelerators.shortcut.schedule import full_steps
from accelerators.shortcut.weights import (
    VARIANT_SUFFIXES,
    ShortcutWeightsError,
    ShortcutWeightsNotFound,
    default_weights_path,
)
from bench.accelerator_base import AcceleratorBase
from bench.config import ALWAYS_TAG, UnknownNameError, suggest
from bench.integrity import sha256
from bench.protocol import BaseModel, StepContext, StepOutput

NO_CROSS_ATTENTION = "nocross"  # the one variant trained without cross-attention (names: VARIANT_SUFFIXES)


def train_flags(variant: str, model: BaseModel) -> str:
    """What ``shortcut train`` needs besides --data/--out to make ``variant``'s file: the reference
    network (default), the ablation (nocross), or a quarter of the width with the MLP scaled
    alike (narrow: --mlp-width is a quarter of the base model's, e.g. 128 for fashion-t2i)."""
    if variant == NO_CROSS_ATTENTION:
        return " --no-cross-attention"
    if variant == "narrow":
        block = getattr(model, "block_config", None)
        width = block()["mlp_hidden_size"] // 4 if block is not None else "<a quarter of the base MLP width>"
        return f" --ratio 4 --mlp-width {width}"
    return ""


@dataclass(frozen=True)
class ShortcutConfig:
    """steps: N; 0 means the base model's default N. More steps with the same budget: finer
    reveals at almost the same cost (the paper's N = 32 result).
    budget: B, the number of full base-model steps (step 0 and B - 1 spread over the rest);
    the other N - B steps cost one shortcut call each (~1/20 of a full forward). Smaller B:
    faster, but prediction errors accumulate between full steps. B = N is vanilla.
    variant: "default" (the reference network), "nocross" (the ablation trained without
    cross-attention to the new tokens) or "narrow" (DiMOO-Shortcut at a quarter of the base
    width, its MLP scaled alike: about a third of the default's cost per call, less accurate; not
    in the reference); picks the shipped weights file.
    weights: an explicit weights file, overriding the variant's default file.
    """

    steps: int = 0
    budget: int = field(default=6, metadata=ALWAYS_TAG)  # in every tag: legends read "steps=16,budget=6"
    variant: str = "default"
    weights: str = ""


class Shortcut(AcceleratorBase):
    """B-of-N full steps; the shortcut network in between (loaded once per base model, at reset
    when the run will use it)."""

    name = "shortcut"

    def __init__(self, config: ShortcutConfig) -> None:
        super().__init__(config)  # checks steps
        if config.budget < 1:
            raise ValueError(f"shortcut: budget (full steps) must be >= 1, got {config.budget}")
        if config.variant not in VARIANT_SUFFIXES:
            raise UnknownNameError(
                f"unknown shortcut variant {config.variant!r}.{suggest(config.variant, VARIANT_SUFFIXES)}"
            )
        self._net: nn.Module | None = None  # ShortcutNet or DiMOOShortcutNet
        self._net_model: BaseModel | None = None
        self._full: dict[int, frozenset[int]] = {}
        self._planned_steps = 0  # N of the run being set up (from num_steps)

    def num_steps(self, default_steps: int) -> int:
        self._planned_steps = super().num_steps(default_steps)
        return self._planned_steps

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        super().reset(model, batch_rows)
        # load the weights before sampling starts (not inside the first shortcut step) when this
        # run will use them; the loop asks num_steps before reset
        if self._planned_steps and self.config.budget < self._planned_steps:
            self.network(model)

    def full_steps(self, num_steps: int) -> frozenset[int]:
        if num_steps not in self._full:
            self._full[num_steps] = frozenset(full_steps(num_steps, self.config.budget))
        return self._full[num_steps]

    def weights_path(self, model: BaseModel) -> Path:
        if self.config.weights:
            return Path(self.config.weights)
        return default_weights_path(model.name, self.config.variant)

    def weights_fingerprint(self, model: BaseModel) -> str | None:
        """sha256 prefix of the weights file this configuration uses (None if it needs none or
        it is missing): a resumed run refuses to mix rows measured with other weights."""
        path = self.weights_path(model)
        if self.config.steps and self.config.budget >= self.config.steps or not path.is_file():
            return None
        return sha256(path)[:16]

    def network(self, model: BaseModel) -> nn.Module:
        """The shortcut for ``model`` (loaded once per model object; the file says its family)."""
        if self._net is not None and self._net_model is model:
            return self._net
        path = self.weights_path(model)
        if not path.is_file():
            flag = train_flags(self.config.variant, model)
            data = f"data/shortcut/{model.name}"
            # a model with its own layout (dimoo) is named after its spec's options, not by a spec
            spec = (
                model.name if getattr(model, "sequence_layout", None) is None else f"<spec of {model.name}>"
            )
            raise ShortcutWeightsNotFound(
                f"shortcut weights for base model {model.name!r} not found: {path}. Create them with\n"
                f"  migm-bench shortcut collect --model {spec} --out {data}\n"
                f"  migm-bench shortcut train --data {data} --out {path}{flag}"
            )
        net, _ = load_network(path, model)
        wanted = self.config.variant == NO_CROSS_ATTENTION
        nocross = trained_without_cross_attention(net)
        if nocross != wanted and not (self.config.weights and self.config.variant == "default"):
            raise ShortcutWeightsError(
                f"{path}: trained with no_cross_attention={nocross}, but variant "
                f"{self.config.variant!r} expects {wanted}"
            )
        self._net, self._net_model = net, model
        return net

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        if ctx.step in self.full_steps(ctx.num_steps) or ctx.prev_features is None:
            features, _ = self.full_forward(model, ctx)  # (B, L, D)
        else:
            net = self.network(model)
            if isinstance(net, DiMOOShortcutNet):
                features = self.dimoo_features(net, model, ctx)
            else:
                features = self.maskgit_features(net, ctx)
            self.counts.other_calls += 1
        return self.output(model, features, ctx)

    @staticmethod
    def maskgit_features(net: nn.Module, ctx: StepContext) -> Tensor:
        """MaskGIT-Shortcut's prediction of this step's features (B, L, D) (``sample_shortcut``)."""
        mask_ratio = ctx.mask.float().mean(dim=1)  # (B,) still masked after the previous reveal
        prev = ctx.prev_features
        return net(prev.to(net.token_table.dtype), ctx.revealed_ids, ctx.revealed_positions,
                   mask_ratio).to(prev.dtype)  # fmt: skip

    def dimoo_features(self, net: DiMOOShortcutNet, model: BaseModel, ctx: StepContext) -> Tensor:
        """DiMOO-Shortcut's prediction of this step's features (B, L, D) from the previous step's, for
        every row of the padded streams (``generate_image_shortcut``; inputs: ``net_inputs``)."""
        revealed = torch.zeros_like(ctx.mask).scatter(1, ctx.revealed_positions, True)  # (B, P)
        mask_ratio = ctx.mask.float().mean(dim=1)  # (B,) unknown / initial after the previous reveal
        return predict_step(net, model, self.layout(model, ctx), ctx.prev_features, ctx.tokens, ctx.cond,
                            revealed, mask_ratio)  # fmt: skip
