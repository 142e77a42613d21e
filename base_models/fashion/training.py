"""Shared training plumbing for the embedded default: resumable checkpoints, shipping.

Checkpoints in progress (model + optimizer + step + RNG) live outside git; the shipped
artefact is a safetensors file whose metadata carries the model configuration, a hash
of the training data and the training settings.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from bench.integrity import record


def save_checkpoint(path: Path, step: int, modules: dict[str, Any], extra: dict | None = None) -> None:
    """Atomically write {name: module/optimizer state} + step to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: m.state_dict() for name, m in modules.items()}
    state["step"] = step
    state["extra"] = extra or {}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, modules: dict[str, Any]) -> tuple[int, dict]:
    """Restore modules from ``path`` if it exists; returns (step, extra) or (0, {})."""
    if not path.is_file():
        return 0, {}
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, m in modules.items():
        m.load_state_dict(state[name])
    return int(state["step"]), state.get("extra", {})


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def ship_weights(path: Path, module: nn.Module, metadata: dict[str, Any]) -> None:
    """Save ``module``'s weights as safetensors with JSON-encoded ``metadata`` values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    record(path)  # a shipped file: keep its folder's INTEGRITY.json in step


def append_curve(path: Path, row: dict[str, Any]) -> None:
    """Append one row of a training curve to a CSV (header written once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a") as f:
        if new:
            f.write(",".join(row) + "\n")
        f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()) + "\n")
