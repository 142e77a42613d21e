"""Train the embedded default's MaskGIT v1 MaskTransformer on tokenised Fashion-MNIST.

Objective as MaskGIT-pytorch (``Trainer/vit.py``: ``get_mask_code`` and the training
step): per image a mask ratio from the arccos schedule, masked tokens replaced by
[MASK], label dropout (0.1) for classifier-free guidance, cross-entropy with label
smoothing 0.1 over all image positions and the V+1 outputs; AdamW with betas
(0.9, 0.96). Warm-up + cosine decay because the run is short.
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
from base_models.fashion.training import (
    append_curve,
    cosine_lr,
    load_checkpoint,
    save_checkpoint,
    ship_weights,
)
from base_models.maskgit.checkpoint import load_vqgan_safetensors
from base_models.maskgit.transformer import MaskTransformer, TransformerConfig

FASHION_TRANSFORMER = TransformerConfig(
    grid=8, codebook_size=256, nclass=10, hidden_dim=128, depth=12, heads=4, mlp_dim=512, dropout=0.0
)


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


def train_maskgit(out: Path, tokenizer: Path, work: Path, settings: MaskGITTrainSettings, data_root=None) -> dict:
    raw, labels = load_fashion_mnist("train", data_root)
    vqgan = load_vqgan_safetensors(tokenizer).eval()
    cache = work / "train_codes.pt"
    if cache.is_file():
        codes = torch.load(cache, weights_only=True)
    else:
        codes = tokenize(vqgan, to_model_images(raw))
        torch.save(codes, cache)
    cfg = FASHION_TRANSFORMER
    torch.manual_seed(settings.seed)
    model = MaskTransformer(cfg)
    init_weights(model)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.9, 0.96), weight_decay=settings.weight_decay)
    ckpt = work / "maskgit.pt"
    start, _ = load_checkpoint(ckpt, {"model": model, "opt": opt})
    gen = torch.Generator().manual_seed(settings.seed + start)
    curve = Path("results/training/maskgit.csv")
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="maskgit")
    t0, running = time.time(), 0.0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, settings.steps, settings.lr, settings.warmup)
        idx = torch.randint(0, len(codes), (settings.batch_size,), generator=gen)
        target, y = codes[idx], labels[idx]
        inp, _ = mask_tokens(target, cfg.codebook_size, gen)
        drop = torch.rand(len(y), generator=gen) < settings.label_drop
        y = y.masked_fill(drop, -1)
        logits = model(inp, y)  # (B, P, V + 1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               label_smoothing=settings.label_smoothing)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() if step > start else loss.item()
        if (step + 1) % 25 == 0:
            bar.set_postfix(loss=f"{running:.4f}")
            append_curve(curve, {"step": step + 1, "loss": running, "lr": opt.param_groups[0]["lr"],
                                 "elapsed_s": round(time.time() - t0, 1)})  # fmt: skip
        if (step + 1) % settings.checkpoint_every == 0:
            save_checkpoint(ckpt, step + 1, {"model": model, "opt": opt})
            ship_weights(work / "maskgit_latest.safetensors", model, _meta(cfg, raw, labels, settings, step + 1))
    save_checkpoint(ckpt, settings.steps, {"model": model, "opt": opt})
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
