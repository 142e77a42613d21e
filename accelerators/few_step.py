"""``few-step``: vanilla sampling with fewer steps, the simplest acceleration.

The smallest example of an accelerator plugin: a config dataclass, a class that
reuses ``Vanilla`` and only refuses ``steps=0`` (N is always given), and one hook that
registers it.
"""

from __future__ import annotations

from dataclasses import dataclass

from accelerators.vanilla import Vanilla


@dataclass(frozen=True)
class FewStepConfig:
    """steps: N used instead of the reference N. Speed-up ~ reference N / steps;
    quality drops as more tokens are revealed per step (the multi-modality problem)."""

    steps: int = 8


class FewStep(Vanilla):
    """Vanilla at the configured N (``AcceleratorBase.num_steps``: steps >= 1 is always used)."""

    name = "few-step"
    min_steps = 1
