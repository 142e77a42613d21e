"""Training toolkit shared by the base models' trainers and the shortcut's.

* Checkpoints: one file holding the ``state_dict`` of each named part (model, optimizer,
  schedule, EMA, random generator) plus the step reached and free-form ``extra``; written
  through ``bench.results.atomic_write`` (a kill leaves the old or the new file), read with
  ``weights_only=True`` (a crafted file cannot run code). Saving every part that draws or
  counts makes a resumed run equal a straight one.
* Learning-rate schedules: ``torch.optim.lr_scheduler.LambdaLR`` with a closed-form factor
  of the step (``warmup_cosine``, ``step_decay``, ``constant``). torch's ``LinearLR`` and
  ``CosineAnnealingLR`` update the rate recursively (the rounding drifts from the closed
  form) and the cosine rises again after ``T_max``; a factor function keeps the values the
  trainers always had. LambdaLR stores only the step for a plain function, so a resumed
  run follows the schedule of its own settings (e.g. more steps).
* EMA of the weights: ``torch.optim.swa_utils.AveragedModel`` with a decay rule per update
  (``ema_of``, ``warmup_ema_decay``).
* Training curves: ``TrainingCurve``, CSV rows with floats to 6 significant digits; a
  resumed run keeps the rows up to its checkpoint and writes the rest again.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel

from bench.results import atomic_write, atomic_write_text

LRFactor = Callable[[int], float]  # step -> multiplier of the base learning rate


# ------------------------------------------------------------------------ checkpoints
def _state_of(part: Any) -> Any:
    return part.get_state() if isinstance(part, torch.Generator) else part.state_dict()


def _restore(part: Any, state: Any) -> None:
    if isinstance(part, torch.Generator):
        part.set_state(state)
    else:
        part.load_state_dict(state)


def save_checkpoint(path: Path, step: int, parts: Mapping[str, Any], extra: dict | None = None) -> None:
    """Atomically write {name: state of part} + ``step`` + ``extra`` to ``path``. A part is
    anything with ``state_dict`` (module, optimizer, scheduler) or a ``torch.Generator``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: _state_of(part) for name, part in parts.items()}
    state["step"] = step
    state["extra"] = extra or {}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(
    path: Path,
    parts: Mapping[str, Any],
    map_location: torch.device | str = "cpu",
    check: Callable[[dict], None] | None = None,
) -> tuple[int, dict]:
    """Restore ``parts`` from ``path`` if it exists; returns (step, extra), or (0, {}) without
    a file. ``check(extra)`` runs before any part is touched (it raises to refuse the file).
    A file without one of the parts (an older format) is refused with a ValueError."""
    path = Path(path)
    if not path.is_file():
        return 0, {}
    state = torch.load(path, map_location=map_location, weights_only=True)
    missing = [name for name in ("step", *parts) if name not in state]
    if missing:
        raise ValueError(
            f"{path} is not a training checkpoint of this version (no {', '.join(missing)}); "
            "delete it or choose another work folder"
        )
    extra = state.get("extra", {})
    if check is not None:
        check(extra)
    for name, part in parts.items():
        _restore(part, state[name])
    return int(state["step"]), extra


# ---------------------------------------------------------------- learning-rate schedule
def warmup_cosine(total: int, warmup: int = 0, floor: float = 0.1) -> LRFactor:
    """Linear warm-up, (step + 1) / warmup for the first ``warmup`` steps, then half a cosine
    from 1 down to ``floor`` at step ``total`` (``floor`` after)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def step_decay(at: int, factor: float) -> LRFactor:
    """1 before step ``at``, ``factor`` from then on (``MultiStepLR(milestones=[at], gamma)``)."""

    def rule(step: int) -> float:
        return factor if step >= at else 1.0

    return rule


def constant(step: int) -> float:
    return 1.0


def lr_scheduler(optimizer: torch.optim.Optimizer, factor: LRFactor) -> LambdaLR:
    """The learning rate of step ``s`` is (the optimizer's lr) * ``factor(s)``; step the
    scheduler once after every ``optimizer.step()``."""
    return LambdaLR(optimizer, factor)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    clip_norm: float | None = None,
) -> float:
    """One update: backpropagate ``loss`` (gradients zeroed first), clip the gradient norm
    of every parameter to ``clip_norm`` if given, step the optimizer, then the schedule.
    Returns the learning rate this step used."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return lr


# ------------------------------------------------------------------------------- EMA
def warmup_ema_decay(decay: float, updates: int) -> float:
    """min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's ExponentialMovingAverage
    ``num_updates``): a short run's average is not dominated by the initial weights."""
    return min(decay, (1 + updates) / (10 + updates))


def ema_of(module: nn.Module, decay: Callable[[int], float]) -> AveragedModel:
    """An exponential moving average of ``module``'s parameters (buffers follow the module).

    Update n (n = 1, 2, ...; ``ema.update_parameters(module)`` after each optimizer step)
    moves each averaged parameter a share 1 - decay(n) towards the module's:
    ema = torch.lerp(ema, param, 1 - decay(n)). The average starts at the module's current
    weights (AveragedModel's first update copies them; it is done here), so the decay rule
    sees n = 1 at the first training update. ``ema.module`` is the averaged network.
    """

    def lerp(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor | int) -> torch.Tensor:
        return torch.lerp(averaged, current, 1.0 - decay(int(n_averaged)))

    ema = AveragedModel(module, avg_fn=lerp)
    ema.update_parameters(module)  # n_averaged 0 -> 1: a copy of the initial weights
    return ema.requires_grad_(False).eval()


# ----------------------------------------------------------------------- curves
def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


class TrainingCurve:
    """A training curve as CSV with columns ``fields``, one row per ``write``.

    ``resume_step``: the step of the checkpoint a run resumes from; rows whose
    ``step_field`` is at most that are kept, later ones (written after the checkpoint by the
    stopped run) are dropped and written again. A fresh run (0) starts a new file.
    """

    def __init__(self, path: Path, fields: Sequence[str], step_field: str, resume_step: int = 0) -> None:
        self.path, self.fields = Path(path), tuple(fields)
        keep = self._rows_until(step_field, resume_step) if resume_step > 0 else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(self.path, text.getvalue())

    def _rows_until(self, step_field: str, last_step: int) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as f:
            return [row for row in csv.DictReader(f) if int(row[step_field]) <= last_step]

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, lineterminator="\n").writerow(
                {k: _format(v) for k, v in row.items()}
            )
