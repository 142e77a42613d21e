"""The two shortcut network families and what differs between them in loading and training.

* ``maskgit``: ``accelerators.shortcut.model.ShortcutNet`` (MIGM-Shortcut's MaskGIT-Shortcut), for
  base models on the default layout (image tokens at [0, P), additive token + position tables);
* ``dimoo``: ``accelerators.shortcut.dimoo_model.DiMOOShortcutNet`` (MIGM-Shortcut's DiMOO-Shortcut:
  LLaDA blocks at reduced width, rotary, cross-attention to the revealed tokens and the prompt),
  for base models with their own ``sequence_layout`` (Lumina-DiMOO).

A weights file says which family it holds (its ``format`` metadata), so ``load_network`` needs no
hint. Training picks the family from the base model (``family_for``). The DiMOO network copies the
base model's block options (heads, kv heads, MLP width, rope_theta, norm eps) at a reduced width;
the base model states them with the optional protocol method ``block_config()`` (a dict with
those LLaDA ``config.json`` names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from accelerators.shortcut import dimoo_inputs, dimoo_weights
from accelerators.shortcut.data import PairBatch, Trajectories, make_pairs
from accelerators.shortcut.dimoo_model import DiMOOShortcutConfig, DiMOOShortcutNet
from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig, model_device
from accelerators.shortcut.weights import (
    ShortcutWeightsError,
    ShortcutWeightsNotFound,
    load_shortcut,
    save_shortcut,
)
from bench.protocol import BaseModel

FAMILIES = ("auto", "maskgit", "dimoo")
BLOCK_OPTIONS = (
    "n_heads",
    "n_kv_heads",
    "mlp_hidden_size",
    "rope_theta",
    "rms_norm_eps",
    "rope_full_precision",
)


# ------------------------------------------------------------------------------ loading
def file_format(path: str | Path) -> str:
    """The ``format`` metadata of a shortcut weights file ("" when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise ShortcutWeightsNotFound(f"shortcut weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format", "")
    except Exception as err:  # not a safetensors file at all
        raise ShortcutWeightsError(f"{path} is not a safetensors file: {err}") from err


def model_dtype(model: BaseModel) -> torch.dtype:
    """The dtype of the base model's embeddings (bfloat16 on a GPU for Lumina-DiMOO)."""
    device = model_device(model)
    one = torch.zeros(1, 1, dtype=torch.long, device=device)
    return model.embed_tokens(one, one).dtype


def load_network(path: str | Path, model: BaseModel) -> tuple[nn.Module, dict[str, str]]:
    """The trained shortcut in ``path`` for ``model`` (eval mode, on the model's device) and the
    file's metadata, whichever family the file holds; errors name the file and the mismatch."""
    if file_format(path) != dimoo_weights.FORMAT:
        return load_shortcut(path, model)  # MaskGIT family (or a clear "not a shortcut file" error)
    net, meta = dimoo_weights.load_dimoo_shortcut(path, model.fingerprint(), model_device(model))
    if net.config.base_dim != model.dim:
        raise ShortcutWeightsError(
            f"{path}: feature width {net.config.base_dim} != the base model's {model.dim}"
        )
    return net.to(model_dtype(model)), meta  # the reference runs it in the base model's bfloat16


def trained_without_cross_attention(net: nn.Module) -> bool:
    """True for the no-cross-attention ablation of either family."""
    if isinstance(net, DiMOOShortcutNet):
        return not net.config.cross_attention
    return net.config.no_cross_attention


# ------------------------------------------------------------------------------ training
def block_config(model: BaseModel) -> dict[str, Any]:
    """The base model's block options (optional protocol method ``block_config()``)."""
    fn = getattr(model, "block_config", None)
    if fn is None:
        raise ValueError(
            f"base model {model.name!r} does not state its block options (block_config()); "
            "the DiMOO shortcut copies them"
        )
    options = dict(fn())
    missing = [k for k in BLOCK_OPTIONS if k not in options]
    if missing:
        raise ValueError(f"base model {model.name!r}: block_config() lacks {missing}")
    return {k: options[k] for k in BLOCK_OPTIONS}


def dimoo_config(model: BaseModel, net: ShortcutNetConfig, mlp_width: int = 0) -> DiMOOShortcutConfig:
    """DiMOO-Shortcut's shape for ``model``: the base blocks' options, the width D of its features,
    and the options the two families share (bottleneck ratio, blocks, time embedding, cross
    attention; ``heads`` and ``mlp_ratio`` are the base model's here, not options). ``mlp_width``
    > 0 replaces the base model's MLP width (not in the reference: a cheaper network)."""
    options = block_config(model)
    if mlp_width:
        options["mlp_hidden_size"] = mlp_width
    return DiMOOShortcutConfig(
        base_dim=model.dim,
        bottleneck_ratio=net.ratio,
        n_block=net.num_blocks,
        embed_t=net.time_embedding,
        cross_attention=not net.no_cross_attention,
        **options,
    )


class MaskGITFamily:
    """``ShortcutNet`` trained on the still-masked image positions (MaskGIT-Shortcut)."""

    name = "maskgit"
    lazy_features = False  # the trajectories fit in memory

    @staticmethod
    def new_net(model: BaseModel, config: ShortcutNetConfig, mlp_width: int = 0) -> nn.Module:
        if mlp_width:
            raise ValueError("--mlp-width is DiMOO-Shortcut's; MaskGIT-Shortcut's MLP is set by --mlp-ratio")
        return ShortcutNet.for_model(model, config)

    @staticmethod
    def pairs(model: BaseModel, data: Trajectories, image: Tensor, stream: Tensor, step: Tensor,
              device: torch.device) -> PairBatch:  # fmt: skip
        return make_pairs(data, image, stream, step).to(device)

    @staticmethod
    def predict(net: nn.Module, b: PairBatch) -> Tensor:
        return net(b.prev, b.new_ids, b.new_positions, b.mask_ratio, b.new_valid)

    @staticmethod
    def save(path: Path, net: nn.Module, model: BaseModel, train_steps: int, extra: dict[str, Any]) -> Path:
        return save_shortcut(path, net, model, train_steps=train_steps, extra=extra)


class DiMOOFamily:
    """``DiMOOShortcutNet`` trained on every real row of the stream (DiMOO-Shortcut)."""

    name = "dimoo"
    lazy_features = True  # ~4.4 GB per image at 1024 px: read per pair from the shards

    @staticmethod
    def new_net(model: BaseModel, config: ShortcutNetConfig, mlp_width: int = 0) -> nn.Module:
        return DiMOOShortcutNet(dimoo_config(model, config, mlp_width)).to(model_device(model))

    @staticmethod
    def pairs(model: BaseModel, data: Trajectories, image: Tensor, stream: Tensor, step: Tensor,
              device: torch.device) -> dimoo_inputs.DiMOOPairBatch:  # fmt: skip
        return dimoo_inputs.make_dimoo_pairs(model, data, image, stream, step, device)

    @staticmethod
    def predict(net: nn.Module, b: dimoo_inputs.DiMOOPairBatch) -> Tensor:
        return dimoo_inputs.predict(net, b)

    @staticmethod
    def save(path: Path, net: nn.Module, model: BaseModel, train_steps: int, extra: dict[str, Any]) -> Path:
        binding = {"base_model": model.name, "dim": model.dim, "train_steps": train_steps}
        return dimoo_weights.save_dimoo_shortcut(path, net, model.fingerprint(), {**binding, **extra})


def family_for(model: BaseModel, name: str = "auto") -> type[MaskGITFamily | DiMOOFamily]:
    """The network family to train for ``model``: "auto" is DiMOO-Shortcut for a model with its own
    sequence layout (a text prompt, rotary blocks) and MaskGIT-Shortcut otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown shortcut network family {name!r}; choose one of {', '.join(FAMILIES)}")
    if name == "auto":
        name = "dimoo" if getattr(model, "sequence_layout", None) is not None else "maskgit"
    return DiMOOFamily if name == "dimoo" else MaskGITFamily
