"""Shortcut weight files: safetensors whose metadata binds them to one base model.

The reference (Kaiwen-Zhu/MIGM-Shortcut, ``MaskGIT-Shortcut/train_shortcut.py``) saves a
bare ``state_dict`` with ``torch.save`` and relies on the user to pair it with the right
MaskGIT checkpoint. Here the file says which base model (name + ``fingerprint()``), which
training N and which network shape it holds, and loading it against another base model is
an error naming the file and both fingerprints. The frozen embedding tables are not
stored: they are taken from the base model the fingerprint guarantees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import Tensor, nn

from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig
from bench.integrity import IntegrityError, record, verify
from bench.protocol import BaseModel
from bench.results import atomic_save_safetensors

FORMAT = "migm-bench-shortcut"
VERSION = "1"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # shipped files: <model>_shortcut[_<variant>].safetensors
# shipped variants -> file-name suffix: the reference network, its no-cross-attention ablation, and
# "narrow" (DiMOO-Shortcut at a quarter of the base width with the MLP scaled alike: a cheaper call,
# not in the reference; ``shortcut train --ratio 4 --mlp-width``)
VARIANT_SUFFIXES = {"default": "", "nocross": "_nocross", "narrow": "_narrow"}


def default_weights_path(model_name: str, variant: str = "default") -> Path:
    """Where the shipped shortcut ``variant`` for base model ``model_name`` lives (and ``train``
    writes the default and nocross ones by default)."""
    if variant not in VARIANT_SUFFIXES:
        raise ValueError(f"unknown shortcut variant {variant!r}; choose one of {', '.join(VARIANT_SUFFIXES)}")
    return WEIGHTS_DIR / f"{model_name}_shortcut{VARIANT_SUFFIXES[variant]}.safetensors"


class ShortcutWeightsError(ValueError):
    """A shortcut weights file is missing, malformed, or bound to another base model."""


class ShortcutWeightsNotFound(ShortcutWeightsError, FileNotFoundError):
    """No shortcut weights file where one was expected (e.g. none trained for this model)."""


def save_shortcut(
    path: str | Path,
    net: ShortcutNet,
    model: BaseModel,
    train_steps: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``net``'s trainable weights with metadata binding them to ``model``; atomic."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "base_model": model.name,
        "base_fingerprint": model.fingerprint(),
        "train_steps": str(train_steps),
        "dim": str(net.dim),
        "net_config": net.config.to_json(),
    }
    return write_weights(path, net, meta, extra)


def write_weights(
    path: str | Path, net: nn.Module, meta: dict[str, str], extra: dict[str, Any] | None = None
) -> Path:
    """``net``'s state dict (float32, CPU) and ``meta`` plus ``extra`` (non-strings as JSON) ->
    safetensors at ``path``, atomically (written beside it, then renamed), and its folder's
    INTEGRITY.json kept in step."""
    meta = dict(meta)
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_save_safetensors(path, tensors, metadata=meta)
    record(path)  # a shipped file: keep its folder's INTEGRITY.json in step
    return path


def read_metadata(path: str | Path, expected_format: str = FORMAT) -> dict[str, str]:
    """The metadata of a shortcut weights file (checked to be one of ``expected_format``)."""
    path = Path(path)
    if not path.is_file():
        raise ShortcutWeightsNotFound(f"shortcut weights file not found: {path}")
    try:
        verify(path)  # shipped files: bytes must match their folder's INTEGRITY.json
    except IntegrityError as err:
        raise ShortcutWeightsError(str(err)) from None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # not a safetensors file at all
        raise ShortcutWeightsError(f"{path} is not a safetensors file: {err}") from err
    if meta.get("format") != expected_format:
        raise ShortcutWeightsError(
            f"{path} is not a MIGM-Shortcut weights file of format {expected_format!r} "
            f"(format={meta.get('format')!r})"
        )
    return meta


def load_shortcut(path: str | Path, model: BaseModel) -> tuple[ShortcutNet, dict[str, str]]:
    """The trained shortcut network in ``path`` for ``model`` (eval mode, on the model's
    device) and the file's metadata. Errors name the file and what is wrong."""
    path = Path(path)
    meta = read_metadata(path)
    mine = model.fingerprint()
    if meta.get("base_fingerprint") != mine:
        raise ShortcutWeightsError(
            f"{path} was trained for base model {meta.get('base_model')!r} with fingerprint "
            f"{meta.get('base_fingerprint')}, but the base model in use, {model.name!r}, has fingerprint "
            f"{mine}; train a shortcut for this model (migm-bench shortcut collect / train)"
        )
    if int(meta.get("dim", -1)) != model.dim:
        raise ShortcutWeightsError(f"{path}: feature width {meta.get('dim')} != the base model's {model.dim}")
    try:
        config = ShortcutNetConfig.from_json(meta["net_config"])
    except (KeyError, ValueError, TypeError) as err:
        raise ShortcutWeightsError(f"{path}: unreadable net_config metadata: {err}") from err
    net = ShortcutNet.for_model(model, config)
    load_strict(net, read_tensors(path), path)
    return net.eval(), meta


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, by key (on the CPU)."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def load_strict(net: nn.Module, state: dict[str, Tensor], path: str | Path, assign: bool = False) -> None:
    """Load ``state`` into ``net`` only if the keys match exactly; else an error naming the file
    and the first missing and unexpected keys (a shape mismatch is an error too). ``assign``
    replaces the parameters by the loaded tensors (for a network built on the meta device)."""
    mine = net.state_dict().keys()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    if missing or unexpected:
        raise ShortcutWeightsError(
            f"{path}: weights do not match the network described by its metadata "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    try:
        net.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as err:  # size mismatches; torch's message spans lines: make it one
        raise ShortcutWeightsError(
            f"{path}: weights do not fit the network: {' '.join(str(err).split())}"
        ) from None
