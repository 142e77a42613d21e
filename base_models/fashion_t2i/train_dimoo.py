"""Train the text-to-image default's base model: a small LLaDA transformer in Lumina-DiMOO's
checkpoint layout, on captioned Fashion-MNIST (issue 14, item 2).

The network is ``base_models.dimoo.llada.LLaDAModel`` built from ``base_models.dimoo.config``
(so the weights are exactly the public checkpoint's ``model.transformer.*`` keys) at a small
size (``DIMOO_T2I_SHAPE``). A training row is the sequence the sampler builds
(``base_models.dimoo.text``): the prompt template around the caption, BOA, BOI, the 8 rows of 8
image codes each followed by the newline token, EOI, EOA; codes from the trained VQ
(``train_vqvae``), offset by head width - codebook size as in the reference; rows of a batch
are left-padded, the padding masked out of attention, rotary positions from 0 at each row's
first real token (``text.build_batch``).

Objective (masked-token prediction of MaskGIT (Chang et al. 2022) and LLaDA (Nie et al. 2025)):
per sequence a mask ratio r = cos(pi/2 * u), u ~ U[0, 1) (MaskGIT's cosine schedule, the one
Lumina-DiMOO samples with), ceil(r * P) image tokens (at least one) replaced by the mask
token; cross-entropy over the head rows of the image codes, mean over the masked positions; the
prompt replaced by the unconditional prompt ("<uncondition>") with probability 0.1 so that
classifier-free guidance works. AdamW, warm-up + cosine, gradient clipping at 1, an EMA of the
weights (``bench.training.ema_of``) which is what ships.

Data: the train split's images realised with ``code_draws`` draws of attributes (draw d is
``captions.caption_set(..., epoch=d)``), tokenised once by the VQ and cached in ``--work``
(keyed by the VQ weights, the data and the draws); epoch e trains on draw e mod ``code_draws``.
Resumable from ``--work`` (model, optimizer, schedule, EMA, random generator, step): a resumed
run ends with the weights of a straight one.

Output: a complete Lumina-DiMOO checkpoint folder, loaded by the ``dimoo`` base model unchanged:
``config.json`` (every field ``base_models.dimoo.config`` reads), ``model.safetensors`` (EMA
weights, training metadata in the header), ``tokenizer.json`` + ``tokenizer_config.json``
(``fashion_t2i.tokenizer``) and ``vqvae/`` (the trained VQ, copied).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from base_models.dimoo.checkpoint import SINGLE
from base_models.dimoo.config import REQUIRED, config_from_dict
from base_models.dimoo.llada import LLaDAModel
from base_models.dimoo.text import Batch, DiMOOTokenizer, SpecialIds, build_batch
from base_models.dimoo.vqvae import WEIGHTS, code_offset, downsampling_factor
from base_models.fashion.data import data_hash, load_fashion_mnist
from base_models.fashion.train_maskgit import init_weights
from base_models.fashion.training import ship_weights
from base_models.fashion_t2i.captions import FRAME, CaptionSet, caption_set, realise
from base_models.fashion_t2i.epochs import batch_indices
from base_models.fashion_t2i.tokenizer import write_tokenizer
from base_models.fashion_t2i.train_vqvae import SUBFOLDER, encode_codes, load_trained_vqvae, vqvae_folder
from bench.results import atomic_write, atomic_write_text
from bench.training import (
    TrainingCurve,
    ema_of,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    warmup_cosine,
    warmup_ema_decay,
)

# the transformer's shape (config.json fields); the vocabulary comes from the tokenizer and the VQ
DIMOO_T2I_SHAPE = {
    "d_model": 256,
    "n_heads": 4,
    "n_kv_heads": 4,
    "n_layers": 6,
    "mlp_hidden_size": 512,  # SwiGLU: gate + up + down, 2x d_model
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "max_sequence_length": 512,  # rows are ~110 tokens (prompt <= 30 + 76 image part)
}
CURVE_FIELDS = ("step", "loss", "lr", "elapsed_s")
PRECISIONS = ("float32", "bfloat16")
CODES_CACHE = "dimoo-t2i-codes.pt"


@dataclass(frozen=True)
class DiMOOTrainSettings:
    steps: int = 2000  # ~46 min on 2 quiet cores at the default shape and precision (README)
    batch_size: int = 64
    lr: float = 1e-3  # AdamW peak learning rate, cosine decay to 10%
    warmup: int = 200
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    uncond_prob: float = 0.1  # prompt -> unconditional prompt (classifier-free guidance)
    ema_decay: float = 0.999  # with the warm-up rule min(decay, (1 + n) / (10 + n))
    code_draws: int = 2  # attribute draws of the train split tokenised once (epoch e uses e mod draws)
    seed: int = 0
    checkpoint_every: int = 200
    train_limit: int | None = None  # use only the first n train images (tests)
    # "bfloat16" (the shipped model): forward and backward under CPU autocast (matmuls in
    # bfloat16; weights, optimizer, EMA and the loss stay float32), 1.4x faster on this machine's
    # bfloat16 units (avx512_bf16); "float32": everything in float32, for CPUs without them
    precision: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the checkpoint's config.json
def checkpoint_config(shape: dict, text_vocab: int, codebook: int, mask_token_id: int) -> dict:
    """config.json of the folder: LLaDA's architecture options (``config.REQUIRED``), the shape,
    and a vocabulary of ``text_vocab`` text ids followed by ``codebook`` image codes (untied head,
    so the image-code offset head width - codebook size is ``text_vocab``)."""
    vocab = text_vocab + codebook
    raw = {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        **REQUIRED,
        "mlp_ratio": 4,  # unused when mlp_hidden_size is given; LLaDA's default
        "input_emb_norm": False,
        "scale_logits": False,
        "rope_full_precision": True,
        **shape,
        "vocab_size": vocab,
        "embedding_size": vocab,
        "weight_tying": False,
        "mask_token_id": mask_token_id,
    }
    config_from_dict(raw, "the dimoo-t2i config")  # refuse a shape the loader would refuse
    return raw


def build_transformer(raw_config: dict, seed: int) -> LLaDAModel:
    """LLaDAModel with N(0, 0.02) linear and embedding weights (unit norm weights), from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LLaDAModel(config_from_dict(raw_config))
        init_weights(model)
    return model


# ------------------------------------------------------------------ the objective
def cosine_mask(batch: int, tokens: int, gen: torch.Generator) -> Tensor:
    """(batch, tokens) bool, True = masked: per row ceil(cos(pi/2 * u) * tokens) positions
    (clamped to [1, tokens]), u ~ U[0, 1), chosen uniformly at random."""
    ratio = torch.cos(0.5 * math.pi * torch.rand(batch, generator=gen))  # (B,) in (0, 1]
    count = (ratio * tokens).ceil().clamp(1, tokens).long()  # (B,)
    rank = torch.rand(batch, tokens, generator=gen).argsort(dim=1).argsort(dim=1)  # (B, P) random ranks
    return rank < count[:, None]


def masked_sequences(prompts: list[list[int]], codes: Tensor, mask: Tensor, rows: int, cols: int,
                     ids: SpecialIds, offset: int) -> Batch:  # fmt: skip
    """Prompt ids per row + codes (B, P) in [0, V) with ``mask`` (B, P) -> the left-padded DiMOO
    sequences: masked image slots hold the mask id, the others code + ``offset``."""
    batch = build_batch(prompts, rows, cols, ids)  # image slots all mask
    image = torch.where(mask, ids.mask, codes + offset)  # (B, P) token ids
    return Batch(
        batch.ids.scatter(1, batch.image_pos, image), batch.positions, batch.key_mask, batch.image_pos
    )


def masked_code_loss(model: LLaDAModel, batch: Batch, codes: Tensor, mask: Tensor, offset: int) -> Tensor:
    """Cross-entropy of the image-code logits (head rows [offset, offset + V)) against ``codes``
    (B, P), mean over the masked positions."""
    feats = model(batch.ids, batch.positions, batch.key_mask)  # (B, L, D)
    img = torch.gather(feats, 1, batch.image_pos[..., None].expand(-1, -1, feats.shape[-1]))  # (B, P, D)
    codebook = model.cfg.table_size - offset
    logits = model.logits(img[mask], slice(offset, offset + codebook))  # (masked, V)
    return F.cross_entropy(logits, codes[mask])


def choose_prompts(
    cond: list[list[int]], uncond: list[int], prob: float, gen: torch.Generator
) -> list[list[int]]:
    """Each row's prompt ids, replaced by the unconditional prompt's with probability ``prob``."""
    drop = (torch.rand(len(cond), generator=gen) < prob).tolist()
    return [uncond if d else c for c, d in zip(cond, drop)]


# ------------------------------------------------------------------ data
def _vq_hash(vq) -> str:
    h = hashlib.sha256()
    for k, v in sorted(vq.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def training_codes(vq, garments: Tensor, classes: Tensor, seed: int, draws: int, work: Path) -> Tensor:
    """(draws, n, P) codes of the train images realised with attribute draws 0..draws-1, encoded
    once and cached in ``work`` (recomputed when the VQ, the data or the draws differ)."""
    key = {"vq": _vq_hash(vq), "data": data_hash(garments, classes), "seed": seed, "draws": draws}
    cache = work / CODES_CACHE
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored["key"] == key:
            return stored["codes"].long()
    out = []
    for draw in range(draws):
        labels = caption_set(garments, classes, "train", seed, draw).labels
        images = torch.cat(
            [realise(garments[i : i + 1000], labels[i : i + 1000]) for i in range(0, len(labels), 1000)]
        )
        out.append(encode_codes(vq, images))
    codes = torch.stack(out)  # (draws, n, P)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(cache, lambda tmp: torch.save({"key": key, "codes": codes.short()}, tmp))
    return codes


@dataclass(frozen=True)
class Vocabulary:
    """The text side (the folder's tokenizer, as the ``dimoo`` base model reads it) and the
    image side (codebook size V, grid rows x cols, offset of code 0)."""

    tokenizer: DiMOOTokenizer
    codebook: int
    rows: int
    cols: int
    offset: int


def vocabulary_of(tokenizer_folder: Path, vq) -> Vocabulary:
    write_tokenizer(tokenizer_folder)
    tokenizer = DiMOOTokenizer(tokenizer_folder)
    text_vocab = tokenizer.tok.get_vocab_size(with_added_tokens=True)
    codebook = int(vq.config.num_vq_embeddings)
    side = FRAME // downsampling_factor(vq.config)
    return Vocabulary(tokenizer, codebook, side, side, code_offset(text_vocab + codebook, codebook))


# ------------------------------------------------------------------ training
def train_dimoo(out: str | Path, vqvae: str | Path, work: str | Path,
                settings: DiMOOTrainSettings = DiMOOTrainSettings(), data_root=None,
                shape: dict | None = None, curve: Path | None = None, log=_log) -> dict:  # fmt: skip
    """Train (resuming from ``work``/dimoo-t2i.pt) on codes of the VQ in ``vqvae`` (a folder
    holding vqvae/, or that subfolder) and write the checkpoint folder ``out``. ``shape``:
    fields that replace those of ``DIMOO_T2I_SHAPE``."""
    out, work = Path(out), Path(work)
    vq = load_trained_vqvae(vqvae)
    vocab = vocabulary_of(work / "tokenizer", vq)
    ids = vocab.tokenizer.ids
    raw = checkpoint_config({**DIMOO_T2I_SHAPE, **(shape or {})}, vocab.offset, vocab.codebook, ids.mask)
    garments, classes = load_fashion_mnist("train", data_root)
    garments, classes = garments[: settings.train_limit], classes[: settings.train_limit]
    codes = training_codes(vq, garments, classes, settings.seed, settings.code_draws, work)  # (draws, n, P)
    model = build_transformer(raw, settings.seed).train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay
    )
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    ema = ema_of(model, lambda n: warmup_ema_decay(settings.ema_decay, n))
    gen = torch.Generator().manual_seed(settings.seed)  # masks and prompt dropout
    parts = {"model": model, "opt": opt, "scheduler": schedule, "ema": ema, "generator": gen}
    step, extra = load_checkpoint(work / "dimoo-t2i.pt", parts)
    resumed_from, running = step, extra.get("running_loss", 0.0)
    curve_csv = TrainingCurve(curve or work / "dimoo-t2i.csv", CURVE_FIELDS, "step", step)
    uncond = vocab.tokenizer.uncond_ids()
    data: CaptionSet | None = None
    start = time.perf_counter()
    while step < settings.steps:
        epoch, index = batch_indices(len(classes), settings.batch_size, settings.seed, step)
        draw = epoch % settings.code_draws
        if data is None or data.epoch != draw:  # the captions of the draw the codes were made from
            data = caption_set(garments, classes, "train", settings.seed, draw)
        target = codes[draw, index]  # (B, P)
        prompts = choose_prompts([vocab.tokenizer.prompt_ids(c) for c in data.captions(index)], uncond,
                                 settings.uncond_prob, gen)  # fmt: skip
        mask = cosine_mask(*target.shape, gen)
        batch = masked_sequences(prompts, target, mask, vocab.rows, vocab.cols, ids, vocab.offset)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bfloat16"):
            loss = masked_code_loss(model, batch, target, mask, vocab.offset).float()
        lr = optimizer_step(loss, opt, schedule, settings.clip_norm)
        ema.update_parameters(model)
        running = 0.98 * running + 0.02 * loss.item() if step > 0 else loss.item()
        step += 1
        if step % 25 == 0 or step == settings.steps:
            log(f"dimoo-t2i step {step}/{settings.steps} loss {running:.4f}")
            curve_csv.write(
                {"step": step, "loss": running, "lr": lr, "elapsed_s": round(time.perf_counter() - start, 1)}
            )
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(work / "dimoo-t2i.pt", step, parts, {"running_loss": running})
    meta = {"kind": "dimoo-t2i", "settings": asdict(settings), "resumed_from": resumed_from,
            "data_hash": data_hash(garments, classes), "vqvae_hash": _vq_hash(vq), "final_loss": running,
            "train_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    write_checkpoint_folder(out, raw, ema.module, Path(vqvae), meta)
    return {**meta, "config": raw, "folder": str(out)}


def write_checkpoint_folder(
    out: Path, raw_config: dict, model: LLaDAModel, vqvae: Path, metadata: dict
) -> None:
    """config.json, model.safetensors, tokenizer files and vqvae/ (copied from ``vqvae`` unless
    it already is ``out``/vqvae)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(raw_config, indent=1))
    ship_weights(out / SINGLE, model, {"format": "pt", **metadata, "config": raw_config})
    write_tokenizer(out)
    source, target = vqvae_folder(vqvae), out / SUBFOLDER
    if source.resolve() != target.resolve():
        target.mkdir(exist_ok=True)
        for name in ("config.json", WEIGHTS):
            shutil.copyfile(source / name, target / name)
