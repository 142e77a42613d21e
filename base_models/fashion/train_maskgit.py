"""Train the embedded default's MaskGIT v1 MaskTransformer on tokenised Fashion-MNIST.

Objective as MaskGIT-pytorch (``Trainer/vit.py``: ``get_mask_code`` and the training
step): per image a mask ratio from the arccos schedule, masked tokens replaced by
[MASK], label dropout (0.1) for classifier-free guidance, cross-entropy with label
smoothing 0.1 over all image positions and the V+1 outputs; AdamW with betas
(0.9, 0.96). Warm-up + cosine decay because the run is short. Checkpoint, schedule and
curve from ``bench.training``; a resumed run continues exactly as a straight one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from base_models.fashion.data import data_hash, load_fashion_mnist, to_model_images
from base_models.fashion.training import ship_weights
from base_models.maskgit.checkpoint import load_vqgan_safetensors
from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
from bench.results import atomic_write
from bench.training import (
    TrainingCurve,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    warmup_cosine,
)

FASHION_TRANSFORMER = TransformerConfig(
    grid=8, codebook_size=256, nclass=10, hidden_dim=128, depth=12, heads=4, mlp_dim=512, dropout=0.0
)
DEFAULT_CURVE = Path("results/training/maskgit.csv")
CURVE_FIELDS = ("step", "loss", "lr", "elapsed_s")


@dataclass(frozen=True)
class MaskGITTrainSettings:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 1e-5
    label_drop: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100


@torch.no_grad()
def tokenize(vqgan, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(n, 1, 32, 32) in [0, 1] -> (n, P) code indices."""
    out = [vqgan.encode(images[i : i + batch] * 2 - 1).flatten(1) for i in range(0, len(images), batch)]
    return torch.cat(out)


def mask_tokens(codes: torch.Tensor, mask_id: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskGIT-pytorch ``get_mask_code`` (arccos mode): ratio arccos(r)/(pi/2), r ~ U(0,1)."""
    r = torch.rand(codes.shape[0], generator=gen)
    ratio = torch.arccos(r) / (math.pi * 0.5)
    mask = torch.rand(codes.shape, generator=gen) < ratio[:, None]
    return codes.masked_fill(mask, mask_id), mask


def init_weights(model: MaskTransformer, std: float = 0.02) -> None:
    """BERT-style init: N(0, 0.02) embeddings and linear weights, zero biases. The
    default N(0, 1) embedding makes the tied head's logits ~sqrt(D) large at start
    (initial loss ~20 instead of ln V), which wastes a short CPU run."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.trunc_normal_(m.weight, 0.0, std)
        if isinstance(m, torch.nn.Linear) and m.bias is not None:
            torch.nn.init.zeros_(m.bias)
        if isinstance(m, torch.nn.MultiheadAttention):
            torch.nn.init.trunc_normal_(m.in_proj_weight, 0.0, std)
            torch.nn.init.zeros_(m.in_proj_bias)


def training_codes(tokenizer: Path, raw: torch.Tensor, work: Path) -> torch.Tensor:
    """The training images as (n, P) code indices, tokenised once and cached in ``work``."""
    cache = work / "train_codes.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    codes = tokenize(load_vqgan_safetensors(tokenizer).eval(), to_model_images(raw))
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda tmp: torch.save(codes, tmp))
    return codes


def maskgit_loss(model: MaskTransformer, codes: torch.Tensor, labels: torch.Tensor,
                 settings: MaskGITTrainSettings, gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """The loss of one random batch: masked codes in, cross-entropy against the full codes."""
    idx = torch.randint(0, len(codes), (settings.batch_size,), generator=gen)
    target, y = codes[idx], labels[idx]  # (B, P), (B,)
    inp, _ = mask_tokens(target, model.cfg.codebook_size, gen)
    drop = torch.rand(len(y), generator=gen) < settings.label_drop
    y = y.masked_fill(drop, -1)  # -1: no class (classifier-free guidance)
    logits = model(inp, y)  # (B, P, V + 1)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           label_smoothing=settings.label_smoothing)  # fmt: skip


def train_maskgit(out: Path, tokenizer: Path, work: Path, settings: MaskGITTrainSettings, data_root=None,
                  curve: Path = DEFAULT_CURVE) -> dict:  # fmt: skip
    """Train (resuming from ``work``/maskgit.pt) and ship ``out`` (safetensors)."""
    raw, labels = load_fashion_mnist("train", data_root)
    codes = training_codes(tokenizer, raw, work)
    cfg = FASHION_TRANSFORMER
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG untouched
        torch.manual_seed(settings.seed)
        model = MaskTransformer(cfg)
        init_weights(model)
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=(0.9, 0.96), weight_decay=settings.weight_decay
    )
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    gen = torch.Generator().manual_seed(settings.seed)
    parts = {"model": model, "opt": opt, "scheduler": schedule, "generator": gen}
    ckpt = work / "maskgit.pt"
    start, extra = load_checkpoint(ckpt, parts)
    running = extra.get("running_loss", 0.0)  # smoothed loss for the bar and the curve
    curve_csv = TrainingCurve(curve, CURVE_FIELDS, "step", start)
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="maskgit")
    t0 = time.time()
    for step in bar:
        loss = maskgit_loss(model, codes, labels, settings, gen)
        lr = optimizer_step(loss, opt, schedule, clip_norm=1.0)
        running = 0.98 * running + 0.02 * loss.item() if step > 0 else loss.item()
        if (step + 1) % 25 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
            elapsed = round(time.time() - t0, 1)
            curve_csv.write({"step": step + 1, "loss": running, "lr": lr, "elapsed_s": elapsed})
        if (step + 1) % settings.checkpoint_every == 0:
            save_checkpoint(ckpt, step + 1, parts, {"running_loss": running})
            ship_weights(
                work / "maskgit_latest.safetensors", model, _meta(cfg, raw, labels, settings, step + 1)
            )
    save_checkpoint(ckpt, settings.steps, parts, {"running_loss": running})
    meta = _meta(cfg, raw, labels, settings, settings.steps)
    ship_weights(out, model, meta)
    return meta


def _meta(cfg, raw, labels, settings, step) -> dict:
    return {
        "kind": "maskgit-transformer",
        "config": cfg.to_dict(),
        "data_hash": data_hash(raw, labels),
        "training": {**asdict(settings), "steps_done": step},
    }


if __name__ == "__main__":  # python -m base_models.fashion.train_maskgit (the CLI wraps this)
    import sys

    steps = int(sys.argv[1]) if len(sys.argv) > 1 else MaskGITTrainSettings.steps
    meta = train_maskgit(Path("base_models/fashion/weights/maskgit.safetensors"),
                         Path("base_models/fashion/weights/tokenizer.safetensors"), Path("/work/ckpt"),
                         MaskGITTrainSettings(steps=steps))  # fmt: skip
    print(json.dumps(meta, indent=1))
