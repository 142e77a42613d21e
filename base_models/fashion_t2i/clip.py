"""A small CLIP trained with open_clip on captioned Fashion-MNIST (issue 14, item 3).

The model is open_clip's own ``CLIP`` class at a small size (``CLIP_T2I_CONFIG``: a ViT on
1x32x32 images expanded to 3 channels, patch 4; open_clip's text transformer with its BPE
``SimpleTokenizer``), trained with ``open_clip.ClipLoss`` (symmetric InfoNCE, Radford et al.
2021) on ``captions.make_split("train")``, a fresh draw of attributes and phrasing each epoch.

Output folder: ``clip-t2i.safetensors`` (the state dict) + ``clip-t2i.json`` (the model
config in open_clip's layout). The metric ``clip_score`` loads them unchanged:
``MIGM_CLIP_WEIGHTS=<out>/clip-t2i.safetensors MIGM_CLIP_MODEL=<out>/clip-t2i.json``. Training
and evaluation preprocess images with the metric's own ``metrics.common.to_rgb_pixels`` and
evaluate through ``metrics.clip_score.load_open_clip``, so the numbers reported here are the
numbers of the network the metric scores with.

Evaluation: zero-shot class accuracy (prompts ``captions.class_prompt``: "a photo of a
{class}") and caption retrieval accuracy (each image against its own caption and the
captions of the other images of its group, top-1) on the test images.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from base_models.fashion.data import data_hash, load_fashion_mnist
from base_models.fashion.training import ship_weights
from base_models.fashion_t2i.captions import CLASS_WORDS, CaptionSet, caption_set, class_prompt, make_split
from base_models.fashion_t2i.epochs import batch_indices
from bench.training import load_checkpoint, lr_scheduler, optimizer_step, save_checkpoint, warmup_cosine
from metrics.clip_score import OpenClipScorer, load_open_clip
from metrics.common import CLIP_MEAN, CLIP_STD, to_rgb_pixels

WEIGHTS_NAME = "clip-t2i.safetensors"
CONFIG_NAME = "clip-t2i.json"
CLIP_T2I_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 32,
        "patch_size": 4,
        "width": 96,
        "layers": 3,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 2},
}  # captions are at most 21 BPE tokens with start/end; 49408 = open_clip's SimpleTokenizer vocabulary


@dataclass(frozen=True)
class ClipTrainSettings:
    steps: int = 2000  # optimiser steps
    batch_size: int = 256  # image-caption pairs per contrastive batch
    lr: float = 1e-3  # AdamW peak learning rate (cosine decay to 10%)
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0
    checkpoint_every: int = 200  # steps between resumable checkpoints in --work
    train_limit: int | None = None  # use only the first n train images (tests)


def build_clip(config: dict, seed: int) -> nn.Module:
    """open_clip ``CLIP`` from a model-config dict, initialised from ``seed`` (global RNG untouched)."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**config)


def clip_tokenizer(config: dict):
    """The tokenizer ``clip_score`` builds for this config (open_clip's BPE SimpleTokenizer)."""
    import open_clip

    return open_clip.SimpleTokenizer(context_length=config["text_cfg"].get("context_length", 77))


def pixels(images: Tensor, config: dict) -> Tensor:
    """(n, 1, 32, 32) in [0, 1] -> the network input, exactly as ``clip_score`` prepares it."""
    pre = config.get("preprocess_cfg", {})
    return to_rgb_pixels(
        images, config["vision_cfg"]["image_size"], pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD)
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_clip(out: str | Path, work: str | Path, settings: ClipTrainSettings = ClipTrainSettings(),
               data_root=None, config: dict | None = None, log=_log) -> dict:  # fmt: skip
    """Train the CLIP, resuming from ``work``/clip-t2i.ckpt; write the weights and the config
    into the folder ``out``. Returns the metadata (settings, final loss, timing, files)."""
    import open_clip

    config = config or CLIP_T2I_CONFIG
    out, work = Path(out), Path(work)
    model = build_clip(config, settings.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    ckpt = work / "clip-t2i.ckpt"
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    parts = {"model": model, "opt": opt, "schedule": schedule}
    step, _ = load_checkpoint(ckpt, parts)
    resumed_from = step
    loss_fn, tokenizer = open_clip.ClipLoss(), clip_tokenizer(config)
    garments, classes = load_fashion_mnist("train", data_root)
    garments, classes = garments[: settings.train_limit], classes[: settings.train_limit]
    data: CaptionSet | None = None
    losses: list[float] = []
    start = time.perf_counter()
    while step < settings.steps:
        epoch, index = batch_indices(len(classes), settings.batch_size, settings.seed, step)
        if data is None or data.epoch != epoch:  # a fresh draw of attributes and phrasing per epoch
            data = caption_set(garments, classes, "train", settings.seed, epoch)
        losses.append(_train_step(model, opt, schedule, loss_fn, tokenizer, data.batch(index), config))
        step += 1
        if step % 50 == 0 or step == settings.steps:
            log(f"clip-t2i step {step}/{settings.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            save_checkpoint(ckpt, step, parts)
    return save_clip(out, model, config, {"settings": asdict(settings), "resumed_from": resumed_from,
                                          "data_hash": data_hash(garments, classes),
                                          "final_loss": losses[-1] if losses else None,
                                          "train_seconds": round(time.perf_counter() - start, 1)})  # fmt: skip


def _train_step(model, opt, schedule, loss_fn, tokenizer, batch, config: dict) -> float:
    """One contrastive step on ``batch`` (a CaptionBatch); returns the loss."""
    img, txt, scale = model(pixels(batch.images, config), tokenizer(batch.captions))  # (b, E), (b, E), ()
    loss = loss_fn(img, txt, scale)
    optimizer_step(loss, opt, schedule)
    with torch.no_grad():  # CLIP's clamp of the learned temperature: logit scale <= 100
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


def save_clip(out: Path, model: nn.Module, config: dict, metadata: dict) -> dict:
    """Write ``out``/clip-t2i.safetensors (metadata in its header) and ``out``/clip-t2i.json."""
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    meta = {**metadata, "model_config": config}
    ship_weights(out / WEIGHTS_NAME, model, meta)
    return {**meta, "weights": str(out / WEIGHTS_NAME), "config": str(out / CONFIG_NAME)}


def load_clip(folder: str | Path) -> OpenClipScorer:
    """The trained CLIP of ``folder`` through the metric's loader (strict keys and shapes)."""
    folder = Path(folder)
    return load_open_clip(str(folder / CONFIG_NAME), folder / WEIGHTS_NAME)


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def embed(scorer: OpenClipScorer, images: Tensor | None = None, texts: list[str] | None = None) -> Tensor:
    """Normalised image embeddings (n, E) of ``images`` or text embeddings of ``texts``."""
    net = scorer.model
    if images is not None:
        feats = net.encode_image(to_rgb_pixels(images, scorer.image_size, scorer.mean, scorer.std))
    else:
        feats = net.encode_text(scorer.tokenizer(list(texts)))
    return nn.functional.normalize(feats.float(), dim=-1)


def zero_shot_accuracy(
    scorer: OpenClipScorer, images: Tensor, classes: Tensor, batch_size: int = 500
) -> float:
    """Fraction of ``images`` (n, 1, 32, 32) whose most similar class prompt is their class."""
    prompts = embed(scorer, texts=[class_prompt(c) for c in range(len(CLASS_WORDS))])  # (10, E)
    hits = 0
    for i in range(0, len(images), batch_size):
        sims = embed(scorer, images[i : i + batch_size]) @ prompts.T  # (b, 10)
        hits += int((sims.argmax(-1) == classes[i : i + batch_size]).sum())
    return hits / max(1, len(images))


def caption_retrieval_accuracy(scorer: OpenClipScorer, data: CaptionSet, group: int = 10) -> float:
    """Top-1 accuracy of image -> caption retrieval within consecutive groups of ``group``
    examples of ``data`` (chance 1/group): each image against the ``group`` captions."""
    hits, total = 0, 0
    for i in range(0, len(data) - group + 1, group):
        batch = data.batch(torch.arange(i, i + group))
        sims = embed(scorer, batch.images) @ embed(scorer, texts=batch.captions).T  # (group, group)
        hits += int((sims.argmax(-1) == torch.arange(group)).sum())
        total += group
    return hits / max(1, total)


def evaluate_clip(
    folder: str | Path, data_root=None, images: int = 2000, group: int = 10, seed: int = 0
) -> dict:
    """Zero-shot class accuracy on the test images (realised with seen attributes) and caption
    retrieval accuracy on the seen and the held-out combinations, first ``images`` test images."""
    scorer = load_clip(folder)
    seen = make_split("test", seed, 0, data_root, images)
    heldout = make_split("heldout", seed, 0, data_root, images)
    everything = seen.batch(torch.arange(len(seen)))
    return {
        "zero_shot_class_accuracy": zero_shot_accuracy(scorer, everything.images, everything.labels[:, 0]),
        "caption_retrieval_accuracy_seen": caption_retrieval_accuracy(scorer, seen, group),
        "caption_retrieval_accuracy_heldout": caption_retrieval_accuracy(scorer, heldout, group),
        "retrieval_group": group,
        "test_images": len(seen),
    }
