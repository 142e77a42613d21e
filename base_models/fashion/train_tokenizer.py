"""Train the embedded default's tokenizer: a small taming VQGAN on Fashion-MNIST.

Objective: L1 + MSE reconstruction + the VQ codebook/commitment loss (no adversarial or
perceptual term: 32x32 grayscale clothes do not need them). Dead codes (unused over a
window of steps) are re-seeded from current encoder outputs so the codebook is really
used. 28x28 images are zero-padded to 32x32 so f=4 gives an 8x8 = 64-token grid.
Checkpoint, schedule and curve from ``bench.training``; a resumed run continues exactly as
a straight one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from base_models.fashion.data import data_hash, load_fashion_mnist, to_model_images
from base_models.fashion.training import ship_weights
from base_models.maskgit.vqgan import VQGANConfig, VQModel
from bench.results import atomic_write_text
from bench.training import (
    TrainingCurve,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    warmup_cosine,
)

FASHION_VQGAN = VQGANConfig(
    resolution=32, in_channels=1, out_ch=1, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
    attn_resolutions=(), z_channels=32, n_embed=256, embed_dim=16, norm_groups=8,
)  # fmt: skip
DEFAULT_CURVE = Path("results/training/tokenizer.csv")
CURVE_FIELDS = ("step", "loss", "rec_loss", "vq_loss", "dead_codes", "elapsed_s")


@dataclass(frozen=True)
class TokenizerTrainSettings:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 100
    seed: int = 0
    restart_every: int = 50  # re-seed codes unused over this many steps
    checkpoint_every: int = 100


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean PSNR (dB) of images in [0, 1]."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


@torch.no_grad()
def evaluate(model: VQModel, images: torch.Tensor, batch: int = 500) -> dict[str, float]:
    """Test-split reconstruction PSNR and codebook usage."""
    model.eval()
    scores, used = [], torch.zeros(model.cfg.n_embed, dtype=torch.bool)
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        idx = model.encode(x * 2 - 1)
        used[idx.unique()] = True
        rec = (model.decode_code(idx).clamp(-1, 1) + 1) / 2
        scores.append(psnr(rec, x) * len(x))
    model.train()
    return {"psnr_db": sum(scores) / len(images), "codes_used": int(used.sum())}


def reseed_dead_codes(model: VQModel, usage: torch.Tensor, z: torch.Tensor, gen: torch.Generator) -> int:
    """Move every code unused in ``usage`` (n_embed,) onto a random encoder output of the
    batch ``z`` (B, embed_dim, h, w). Returns how many codes were dead. ``model``: anything whose
    ``quantize.embedding`` is the codebook (this VQGAN, diffusers' VQModel)."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B * h * w, embed_dim)
        pick = torch.randint(0, len(flat), (len(dead),), generator=gen)
        model.quantize.embedding.weight.data[dead] = flat[pick]
    return len(dead)


def train_tokenizer(out: Path, work: Path, settings: TokenizerTrainSettings, data_root=None,
                    curve: Path = DEFAULT_CURVE) -> dict:  # fmt: skip
    """Train (resuming from ``work``/tokenizer.pt) and ship ``out`` (safetensors)."""
    raw, labels = load_fashion_mnist("train", data_root)
    test_raw, _ = load_fashion_mnist("test", data_root)
    train, test = to_model_images(raw), to_model_images(test_raw)
    with torch.random.fork_rng(devices=[]):  # initial weights from the seed, global RNG untouched
        torch.manual_seed(settings.seed)
        model = VQModel(FASHION_VQGAN)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    gen = torch.Generator().manual_seed(settings.seed)
    parts = {"model": model, "opt": opt, "scheduler": schedule, "generator": gen}
    ckpt = work / "tokenizer.pt"
    start, extra = load_checkpoint(ckpt, parts)
    usage = extra.get("usage", torch.zeros(FASHION_VQGAN.n_embed))  # code counts since the last re-seeding
    curve_csv = TrainingCurve(curve, CURVE_FIELDS, "step", start)
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="tokenizer")
    t0 = time.time()
    for step in bar:
        x = train[torch.randint(0, len(train), (settings.batch_size,), generator=gen)] * 2 - 1
        z = model.encode_latent(x)
        zq, vq_loss, idx = model.quantize(z)
        rec = model.decoder(model.post_quant_conv(zq))
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        loss = rec_loss + vq_loss
        optimizer_step(loss, opt, schedule)
        usage += torch.bincount(idx.flatten(), minlength=FASHION_VQGAN.n_embed)
        if (step + 1) % settings.restart_every == 0:
            dead = reseed_dead_codes(model, usage, z, gen)
            bar.set_postfix(loss=f"{loss.item():.4f}", dead=dead)
            curve_csv.write({"step": step + 1, "loss": loss.item(), "rec_loss": rec_loss.item(),
                             "vq_loss": vq_loss.item(), "dead_codes": dead,
                             "elapsed_s": round(time.time() - t0, 1)})  # fmt: skip
            usage.zero_()
        if (step + 1) % settings.checkpoint_every == 0:
            save_checkpoint(ckpt, step + 1, parts, {"usage": usage})
    save_checkpoint(ckpt, settings.steps, parts, {"usage": usage})
    scores = evaluate(model, test)
    meta = {
        "kind": "vqgan",
        "config": FASHION_VQGAN.to_dict(),
        "data_hash": data_hash(raw, labels),
        "training": asdict(settings),
        "test_psnr_db": round(scores["psnr_db"], 3),
        "codes_used": scores["codes_used"],
    }
    ship_weights(out, model, meta)
    atomic_write_text(work / "tokenizer_eval.json", json.dumps(meta, indent=1))
    return meta


if __name__ == "__main__":  # python -m base_models.fashion.train_tokenizer (the CLI wraps this)
    print(
        json.dumps(
            train_tokenizer(
                Path("base_models/fashion/weights/tokenizer.safetensors"),
                Path("/work/ckpt"),
                TokenizerTrainSettings(
                    steps=int(__import__("sys").argv[1]) if len(__import__("sys").argv) > 1 else 1200
                ),
            ),
            indent=1,
        )
    )
