"""A sample grid of the embedded default: one row per class, ``per_class`` columns."""

from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def save_sample_grid(out: Path, per_class: int = 10, seed: int = 0, accel: str = "vanilla") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from base_models.fashion.data import CLASS_NAMES
    from base_models.fashion.plugin import load_fashion
    from bench.plugins import get_manager
    from bench.sampling import sample

    model = load_fashion()
    accelerator = get_manager().make_accelerator(accel)
    cond = torch.arange(10).repeat_interleave(per_class)  # (10 * per_class,)
    tokens = sample(model, accelerator, cond, torch.Generator().manual_seed(seed)).tokens
    images = model.decode(tokens)[:, 0]  # (n, 32, 32)
    fig, axes = plt.subplots(10, per_class, figsize=(per_class * 0.8, 10 * 0.8 + 0.4))
    for i, ax in enumerate(axes.flat):
        ax.imshow(images[i].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i % per_class == 0:
            ax.set_ylabel(CLASS_NAMES[i // per_class], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"fashion default, {accel}, seed {seed}", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
