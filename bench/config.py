"""Frozen config dataclasses: strict construction from strings/dicts and short tags.

Every accelerator (and base model) option set is a frozen dataclass. ``build_config``
turns ``{"key": "value"}`` (e.g. parsed from ``vanilla:steps=8``) into an instance,
converting values to the field types and rejecting unknown keys with suggestions.
``config_tag`` gives a short deterministic tag for file names and legends.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

DEFAULT_ROUNDS = 10  # interleaved timed rounds; on 2 CPU cores ~10 paired ratios give a median within a few %
DEFAULT_REFERENCE = "vanilla"  # the accelerator speed-ups and "vs vanilla" metrics are measured against

# Intra-op threads while timing. On a shared machine with few cores, torch's default (one
# thread per core) makes every parallel op wait for whichever core another job holds: a
# single background job then slows small-op configurations (caches, the shortcut) more than
# vanilla's large matmuls and shifts their speed-ups. One thread gives up absolute speed
# for speed-ups that stay put under load (the noise check, ``migm-bench noise-check``).
DEFAULT_TIMING_THREADS = 1
# How a speed-up is estimated from the paired rounds (``bench.stats.SPEEDUP_ESTIMATORS``):
# the median of the per-round ratios, or the ratio of the fastest rounds (``min``).
SPEEDUP_ESTIMATORS = ("median-ratio", "min")
DEFAULT_SPEEDUP_ESTIMATOR = "median-ratio"

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown plugin name or config key; the message lists near matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """' Did you mean: a, b?' for near matches of ``name`` (empty if none)."""
    choices = list(choices)
    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if near:
        return f" Did you mean: {', '.join(near)}?"
    return f" Known: {', '.join(sorted(choices))}." if choices else ""


def _convert(value: Any, typ: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union or origin is types.UnionType:
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ValueError:
                continue
        raise ValueError(f"{key}={value!r} does not fit {typ}")
    if origin in (tuple, list):
        inner = args[0] if args else str
        parts = [p for p in value.replace("/", ",").split(",") if p.strip()]
        return tuple(_convert(p.strip(), inner, key) for p in parts)
    if typ is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={value!r} is not a boolean (true/false)")
    if typ is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not an integer") from None
    if typ is float:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a number") from None
    return value


def build_config(cls: type[T], options: dict[str, Any] | None = None, *, owner: str = "") -> T:
    """Instantiate the frozen dataclass ``cls`` from ``options``; unknown keys are errors."""
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    for key in options:
        if key not in fields:
            where = f" for {owner}" if owner else ""
            raise UnknownNameError(f"unknown option {key!r}{where}.{suggest(key, fields)}")
    kwargs = {k: _convert(v, hints.get(k, str), k) for k, v in options.items()}
    return cls(**kwargs)


ALWAYS_TAG = {"tag": "always"}  # field(metadata=ALWAYS_TAG): always part of the tag


def config_tag(config: Any) -> str:
    """Short deterministic tag: the fields that differ from their defaults (and fields marked
    ``metadata=ALWAYS_TAG``, e.g. a B-of-N budget), ``k=v`` joined by ``,`` in field order;
    ``default`` when there are none."""
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        if value != default or f.metadata.get("tag") == "always":
            if isinstance(value, float):
                value = f"{value:g}"
            elif isinstance(value, (tuple, list)):
                value = "/".join(str(v) for v in value)
            parts.append(f"{f.name}={value}")
    return ",".join(parts) or "default"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'name:key=val,key2=val2' -> ('name', {'key': 'val', 'key2': 'val2'}).

    Tuple values use '/' inside a spec, e.g. ``shortcut:steps=16,budget=4``.
    """
    name, _, rest = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"option {item!r} in {spec!r} must look like key=value")
        if key.strip() in options:
            raise ValueError(f"option {key.strip()!r} is given twice in {spec!r}")
        options[key.strip()] = value.strip()
    return name.strip(), options
