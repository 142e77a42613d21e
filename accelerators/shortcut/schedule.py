"""Which of the N steps run the full base model under MIGM-Shortcut (B of N).

Reference: Kaiwen-Zhu/MIGM-Shortcut, ``MaskGIT-Shortcut/Trainer/vit.py``
(``MaskGIT.sample_shortcut``, the ``refresh_steps`` loop): step 0 is always full (there
are no features to start from); for k = 1 .. B-1 the k-th further full step is
``max(previous + 1, round(N * (k / B)))``. Python's ``round`` rounds halves to even
(``round(2.5) == 2``), and the reference evaluates ``N * (k / B)`` in floating point;
both are kept so the step indices match the reference exactly.
"""

from __future__ import annotations


def full_steps(num_steps: int, budget: int) -> list[int]:
    """Indices of the B full steps among N, ascending; the other N - B steps use the shortcut.

    B = N gives every step (vanilla); B = 1 only step 0 (the reference requires B >= 2,
    B = 1 is allowed here as the extreme point of a sweep).
    """
    if num_steps < 1:
        raise ValueError(f"shortcut: steps must be >= 1, got {num_steps}")
    if not 1 <= budget <= num_steps:
        raise ValueError(f"shortcut: budget (full steps) must lie in [1, steps={num_steps}], got {budget}")
    chosen = [0]
    for k in range(1, budget):
        chosen.append(max(chosen[-1] + 1, round(num_steps * (k / budget))))
    if chosen[-1] >= num_steps:  # cannot happen for 1 <= B <= N; guards the arithmetic above
        raise AssertionError(f"full-step schedule {chosen} leaves the {num_steps} steps")
    return chosen
