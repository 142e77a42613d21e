"""Train the image tokenizer of the text-to-image default: a diffusers ``VQModel`` on captioned
Fashion-MNIST (issue 14, item 2), in the layout ``base_models.dimoo.vqvae`` loads.

The network is diffusers' own ``VQModel`` (aMUSEd-VQ's class, the one Lumina-DiMOO ships in its
``vqvae/`` folder) at a small size (``VQVAE_T2I_CONFIG``): 1-channel 32x32 images, three encoder
blocks, so a downsampling factor of 2 ** (3 - 1) = 4 and an 8x8 = 64-token grid (DiMOO's own
factor is 16; a 32x32 image would be 2x2 tokens), a codebook of 512, ``lookup_from_codebook`` so
integer codes decode through the codebook as the reference decodes them.

Pixels: in [0, 1] on both sides, as Lumina-DiMOO uses its VQ (``utils/image_utils.py``
``encode_img_with_breaks``: ``VaeImageProcessor(do_normalize=False)``, codes =
``vqvae.quantize(vqvae.encode(x).latents)[2][2]``; ``decode_vq_to_image`` clips the decoder's
output to [0, 1]).

Objective: L1 + MSE reconstruction + the VQ loss diffusers' ``VectorQuantizer`` returns (its
legacy form: ||sg(z_q) - z||^2 + 0.25 ||z_q - sg(z)||^2, the codebook learning through the
second term), no perceptual or adversarial term (32x32 grayscale garments do not need them;
nothing is downloaded). Codes unused over ``restart_every`` steps are re-seeded from encoder
outputs (as the class-conditional default's tokenizer, ``base_models.fashion.train_tokenizer``).
Images: ``captions.make_split("train")`` realised (size, position, tone), a fresh draw of
attributes every epoch. Checkpoint, schedule and curve from ``bench.training``: a resumed run
ends with the weights of a straight one.

Output: ``<out>/vqvae/config.json`` + ``diffusion_pytorch_model.safetensors`` (training metadata
in its header); reported: reconstruction PSNR on the test images and the codes used.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from base_models.dimoo.vqvae import WEIGHTS, decode_codes, downsampling_factor
from base_models.fashion.data import data_hash, load_fashion_mnist
from base_models.fashion.train_tokenizer import psnr, reseed_dead_codes
from base_models.fashion.training import ship_weights
from base_models.fashion_t2i.captions import FRAME, CaptionSet, caption_set, make_split, realise
from base_models.fashion_t2i.epochs import batch_indices
from bench.results import atomic_write_text
from bench.training import (
    TrainingCurve,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    warmup_cosine,
)

SUBFOLDER = "vqvae"
VQVAE_T2I_CONFIG = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],  # 3 blocks: downsampling factor 4
    "layers_per_block": 1,
    "latent_channels": 16,  # = the codebook's vector size (vq_embed_dim defaults to it)
    "num_vq_embeddings": 512,
    "norm_num_groups": 16,
    "sample_size": FRAME,
    "mid_block_add_attention": False,
    "lookup_from_codebook": True,
}
CURVE_FIELDS = ("step", "loss", "rec_loss", "vq_loss", "dead_codes", "elapsed_s")


@dataclass(frozen=True)
class VQTrainSettings:
    steps: int = 1200  # ~8-13 min on 2 quiet cores (estimate in the README)
    batch_size: int = 64
    lr: float = 5e-4  # Adam (0.5, 0.9), warm-up then cosine to 10%
    warmup: int = 100
    seed: int = 0
    restart_every: int = 50  # re-seed codes unused over this many steps
    checkpoint_every: int = 100
    train_limit: int | None = None  # use only the first n train images (tests)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_vqvae(config: dict, seed: int):
    """diffusers ``VQModel`` from ``config``, initialised from ``seed`` (global RNG untouched)."""
    from diffusers import VQModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VQModel(**config)


def reconstruct(vq, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """x (B, C, H, W) in [0, 1] -> (reconstruction (B, C, H, W), VQ loss (), codes (B * h * w,),
    latents (B, E, h, w)): ``VQModel.decode``'s quantising path, with the codes kept."""
    z = vq.encode(x).latents  # (B, E, h, w)
    zq, vq_loss, (_, _, codes) = vq.quantize(z)
    return vq.decoder(vq.post_quant_conv(zq)), vq_loss, codes, z


@torch.no_grad()
def encode_codes(vq, images: Tensor, batch: int = 500) -> Tensor:
    """(n, C, H, W) in [0, 1] -> (n, h * w) codes, row-major (Lumina-DiMOO's
    ``encode_img_with_breaks``: ``vqvae.quantize(vqvae.encode(x).latents)[2][2]``)."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        out.append(vq.quantize(vq.encode(x).latents)[2][2].view(len(x), -1))
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.long)


@torch.no_grad()
def evaluate_vqvae(vq, images: Tensor, batch: int = 500) -> dict:
    """Reconstruction PSNR (dB, mean over images) through the decoder path the ``dimoo`` base
    model uses (``decode_codes``: codebook lookup, clip to [0, 1]) and the codes used."""
    was_training = vq.training
    vq.eval()
    side = images.shape[-1] // downsampling_factor(vq.config)
    total, used = 0.0, torch.zeros(vq.config.num_vq_embeddings, dtype=torch.bool)
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        codes = encode_codes(vq, x)  # (b, side * side)
        used[codes.unique()] = True
        total += psnr(decode_codes(vq, codes, side, side), x) * len(x)
    vq.train(was_training)
    return {"test_psnr_db": round(total / max(1, len(images)), 3), "codes_used": int(used.sum()),
            "test_images": len(images)}  # fmt: skip


def train_vqvae(out: str | Path, work: str | Path, settings: VQTrainSettings = VQTrainSettings(),
                data_root=None, config: dict | None = None, eval_images: int = 2000,
                curve: Path | None = None, log=_log) -> dict:  # fmt: skip
    """Train (resuming from ``work``/vqvae-t2i.pt), write ``out``/vqvae/ and evaluate it on the
    first ``eval_images`` test images (0: skip). ``config``: VQModel arguments that replace those
    of ``VQVAE_T2I_CONFIG``. Returns the metadata."""
    config = {**VQVAE_T2I_CONFIG, **(config or {})}
    out, work = Path(out), Path(work)
    garments, classes = load_fashion_mnist("train", data_root)
    garments, classes = garments[: settings.train_limit], classes[: settings.train_limit]
    vq = build_vqvae(config, settings.seed).train()
    opt = torch.optim.Adam(vq.parameters(), lr=settings.lr, betas=(0.5, 0.9))
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    gen = torch.Generator().manual_seed(settings.seed)  # dead-code re-seeding
    parts = {"model": vq, "opt": opt, "scheduler": schedule, "generator": gen}
    step, extra = load_checkpoint(work / "vqvae-t2i.pt", parts)
    resumed_from = step
    # code counts since the last re-seeding
    usage = extra.get("usage", torch.zeros(config["num_vq_embeddings"]))
    curve_csv = TrainingCurve(curve or work / "vqvae-t2i.csv", CURVE_FIELDS, "step", step)
    data: CaptionSet | None = None
    loss, start = None, time.perf_counter()
    while step < settings.steps:
        epoch, index = batch_indices(len(classes), settings.batch_size, settings.seed, step)
        if data is None or data.epoch != epoch:  # a fresh draw of attributes per epoch
            data = caption_set(garments, classes, "train", settings.seed, epoch)
        x = realise(garments[index], data.labels[index])  # (B, 1, 32, 32) in [0, 1]
        rec, vq_loss, codes, z = reconstruct(vq, x)
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        loss = rec_loss + vq_loss
        optimizer_step(loss, opt, schedule)
        usage += torch.bincount(codes.flatten(), minlength=len(usage))
        step += 1
        if step % settings.restart_every == 0:
            dead = reseed_dead_codes(vq, usage, z, gen)
            usage.zero_()
            log(f"vqvae-t2i step {step}/{settings.steps} loss {loss.item():.4f} dead codes {dead}")
            curve_csv.write({"step": step, "loss": loss.item(), "rec_loss": rec_loss.item(),
                             "vq_loss": vq_loss.item(), "dead_codes": dead,
                             "elapsed_s": round(time.perf_counter() - start, 1)})  # fmt: skip
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(work / "vqvae-t2i.pt", step, parts, {"usage": usage})
    meta = {"kind": "diffusers-vqmodel", "settings": asdict(settings), "resumed_from": resumed_from,
            "data_hash": data_hash(garments, classes), "final_loss": None if loss is None else loss.item(),
            "train_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    if eval_images > 0:
        test = make_split("test", settings.seed, 0, data_root, eval_images)
        meta["evaluation"] = evaluate_vqvae(vq, realise(test.garments, test.labels))
    folder = save_vqvae(out, vq, meta)
    atomic_write_text(work / "vqvae-t2i_eval.json", json.dumps(meta, indent=1))
    return {**meta, "folder": str(folder)}


def save_vqvae(out: Path, vq, metadata: dict) -> Path:
    """Write ``out``/vqvae/config.json (diffusers' config JSON) and the weights; returns the folder."""
    folder = Path(out) / SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.json", vq.to_json_string())
    ship_weights(folder / WEIGHTS, vq, {"format": "pt", **metadata})
    return folder


def vqvae_folder(path: str | Path) -> Path:
    """The ``vqvae/`` folder a path names: ``path``/vqvae when ``path`` is a checkpoint folder
    holding one, else ``path`` itself (a folder named vqvae, as ``save_vqvae`` writes)."""
    path = Path(path)
    return path / SUBFOLDER if (path / SUBFOLDER).is_dir() else path


def load_trained_vqvae(path: str | Path):
    """The VQModel of ``vqvae_folder(path)`` in eval mode, strictly loaded by the ``dimoo`` base
    model's own loader (any downsampling factor)."""
    from base_models.dimoo.vqvae import load_vqvae

    folder = vqvae_folder(path)
    if folder.name != SUBFOLDER:
        raise FileNotFoundError(
            f"{folder}: expected a checkpoint folder holding {SUBFOLDER}/, or that subfolder"
        )
    return load_vqvae(folder.parent, factor=None)
