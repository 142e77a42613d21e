"""Lazy ``"module:attr"`` references, so registering a plugin imports none of its heavy code.

As lm-evaluation-harness's registry (``lm_eval/api/registry.py``) keeps ``"module:Class"``
entries until a model is asked for, a spec may name its config class, factory, metric info
or check as ``"package.module:Name"`` (entry-point syntax; ``Name.attr`` paths allowed).
The spec field holding it (``LazyField``) imports the module on first read and returns the
object; the CLI's ``--help``, ``report`` and ``plot`` therefore never import torch.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any


def is_ref(value: object) -> bool:
    """``"module:attr"``: a lazy reference (a class or function is used as it is)."""
    return isinstance(value, str) and ":" in value


@cache
def load_ref(ref: str) -> Any:
    """Import ``"package.module:Name.attr"`` and return the object it names."""
    module_name, _, path = ref.partition(":")
    if not module_name or not path:
        raise ValueError(f"lazy reference {ref!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"lazy reference {ref!r}: {obj!r} has no attribute {part!r}") from None
    return obj


class LazyField:
    """A dataclass field that accepts an object or a ``"module:attr"`` reference and reads as
    the object (imported on first read). ``raw(spec, name)`` gives what was stored, unloaded."""

    def __init__(self, default: Any = ...) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}_ref"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # dataclasses asks the class for the field's default
            if self.default is ...:
                raise AttributeError(self.slot)  # no default: a required field
            return self.default
        value = obj.__dict__[self.slot]
        return load_ref(value) if is_ref(value) else value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value  # also in frozen dataclasses: set once by __init__


def raw(spec: Any, name: str) -> Any:
    """The value stored in ``spec``'s lazy field ``name``: a reference string is not loaded."""
    return spec.__dict__[f"_{name}_ref"]
