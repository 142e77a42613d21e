"""Sampling settings as base-model spec options (``--model maskgit:steps=15,gumbel_temperature=7``).

Every base model plugin exposes the same seven knobs of ``SamplingSettings``; each one left
unset keeps the model's own default, so a spec without them samples exactly as before.
``steps`` 0 and a negative ``cfg_weight`` mean "unset" (the historical spelling); the others
are unset when ``None``. Bad values are one-line errors naming the option.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.protocol import SamplingSettings

CFG_SCHEDULES = ("linear", "constant")
MASK_SCHEDULES = ("arccos", "cosine", "linear")
REVEAL_POLICIES = ("confidence", "halton")
OPTION_NAMES = ("steps", "cfg_weight", "cfg_schedule", "mask_schedule", "temperature",
                "gumbel_temperature", "reveal_policy")  # fmt: skip


def _choice(owner: str, key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: unknown {key} {value!r}; choose one of {', '.join(choices)}")
    return value


def apply_sampling_options(defaults: SamplingSettings, config: Any, owner: str = "model") -> SamplingSettings:
    """``defaults`` with the sampling fields ``config`` sets (attributes named as in
    ``OPTION_NAMES``; a missing attribute counts as unset)."""
    changes: dict[str, Any] = {}
    steps = getattr(config, "steps", 0)
    if steps < 0:
        raise ValueError(f"{owner}: steps must be >= 1 (0 = the model's default), got {steps}")
    if steps:
        changes["steps"] = steps
    cfg_weight = getattr(config, "cfg_weight", -1.0)
    if cfg_weight is not None and cfg_weight >= 0:
        changes["cfg_weight"] = float(cfg_weight)
    temperature = getattr(config, "temperature", None)
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"{owner}: temperature must be > 0, got {temperature}")
        changes["temperature"] = float(temperature)
    gumbel = getattr(config, "gumbel_temperature", None)
    if gumbel is not None:
        if not gumbel >= 0:
            raise ValueError(f"{owner}: gumbel_temperature must be >= 0, got {gumbel}")
        changes["gumbel_temperature"] = float(gumbel)
    for key, choices in (("cfg_schedule", CFG_SCHEDULES), ("mask_schedule", MASK_SCHEDULES),
                         ("reveal_policy", REVEAL_POLICIES)):  # fmt: skip
        value = getattr(config, key, None)
        if value is not None:
            changes[key] = _choice(owner, key, value, choices)
    return dataclasses.replace(defaults, **changes) if changes else defaults
