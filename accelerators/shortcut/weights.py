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

from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig
from bench.integrity import IntegrityError, record, verify
from bench.protocol import BaseModel
from bench.results import atomic_save_safetensors

FORMAT = "migm-bench-shortcut"
VERSION = "1"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # shipped files: <model>_shortcut[_nocross].safetensors


def default_weights_path(model_name: str, no_cross_attention: bool = False) -> Path:
    """Where the shipped shortcut for base model ``model_name`` lives (and ``train`` writes by default)."""
    return WEIGHTS_DIR / f"{model_name}_shortcut{'_nocross' if no_cross_attention else ''}.safetensors"


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "base_model": model.name,
        "base_fingerprint": model.fingerprint(),
        "train_steps": str(train_steps),
        "dim": str(net.dim),
        "net_config": net.config.to_json(),
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_save_safetensors(path, tensors, metadata=meta)
    record(path)  # a shipped file: keep its folder's INTEGRITY.json in step
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a shortcut weights file (checked to be one)."""
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
    if meta.get("format") != FORMAT:
        raise ShortcutWeightsError(
            f"{path} is not a MIGM-Shortcut weights file (format={meta.get('format')!r})"
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
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ShortcutWeightsError(
            f"{path}: weights do not match the network described by its metadata "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    return net.eval(), meta
