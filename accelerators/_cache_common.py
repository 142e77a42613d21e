"""Small pieces the training-free cache accelerators share (ML-Cache, ReCAP, TaylorSeer,
dLLM-Cache): condition-position indices and config validation."""

from __future__ import annotations

import torch
from torch import Tensor

from bench.protocol import BaseModel


def condition_positions(model: BaseModel, batch_rows: int, device: torch.device) -> Tensor:
    """Sequence positions of the condition tokens, [P, L), for every row: (B, L - P) long."""
    P, L = model.num_image_tokens, model.seq_len
    return torch.arange(P, L, device=device).expand(batch_rows, L - P)


def with_condition(positions: Tensor, model: BaseModel) -> Tensor:
    """(B, Q) image positions -> (B, Q + L - P): the condition positions appended."""
    cond_pos = condition_positions(model, positions.shape[0], positions.device)
    return torch.cat([positions, cond_pos], dim=1)


def require_int(owner: str, name: str, value: int, minimum: int) -> None:
    """A clear error for an integer knob below its minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def require_fraction(owner: str, name: str, value: float, *, upper_open: bool = False) -> None:
    """A clear error for a ratio knob outside [0, 1] (or [0, 1) with ``upper_open``)."""
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{owner}: {name} must lie in {interval}, got {value!r}")
