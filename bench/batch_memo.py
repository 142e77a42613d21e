"""One value remembered per generated batch, so a metric does its heavy work once.

The runner asks a metric for its value (``compute``) and then for its interval
(``bench.metrics.metric_interval``) on the same batch, back to back: both need the same
per-image scores, classifier logits or features. A metric keeps a ``BatchMemo`` and wraps
that work in ``memo.get((generated, ...), make)``; the second request reuses the first
result. Keys compare by identity and the memo holds the key objects, so an identity cannot
be reused by another batch while it is remembered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class BatchMemo:
    """The last (key objects -> value) pair; a new key replaces it."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: Any = None

    def get(self, key: tuple[Any, ...], make: Callable[[], T]) -> T:
        if (
            self._key is not None
            and len(key) == len(self._key)
            and all(a is b for a, b in zip(key, self._key))
        ):
            return self._value
        value = make()
        self._key, self._value = key, value
        return value
