"""Which training examples step s of a run uses: epochs of a seeded permutation.

A function of (n, batch size, seed, step) only, so a resumed run draws exactly the batches of a
straight one without saving any random state. The epoch number also names the caption draw
(``captions.caption_set(..., epoch)``): every epoch sees fresh attributes and phrasing.
Shared by the text-to-image trainers (``clip``, ``vqvae``, ``dimoo``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> tuple[int, Tensor]:
    """(epoch, indices (b,)) of training step ``step`` over ``n`` examples."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
    return epoch, order[k * batch_size : (k + 1) * batch_size]
