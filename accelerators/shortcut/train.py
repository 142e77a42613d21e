"""``migm-bench shortcut train``: fit the shortcut network to recorded trajectories.

Reference: Kaiwen-Zhu/MIGM-Shortcut, ``MaskGIT-Shortcut/train_shortcut.py`` and its README
command (``--bottleneck_ratio 2 --mse_weight 1 --kl_weight 0 --ema_decay 0.9999 --lr 1e-4
--step_decay``): MSE between predicted and true next-step features on the positions still
masked after the step, AdamW (weight decay 1e-2), an EMA of the weights (validated and
shipped), a step learning-rate decay (x0.1 after 1000 iterations), DDP across processes,
validation by cosine similarity and MSE on held-out trajectories, with the "do nothing"
baseline (f_{i+1} ~ f_i) beside it. The reference trains one pair per GPU for days; here a
batch mixes pairs of different steps (padded new tokens, masked in the attention), and the
defaults suit a CPU run of minutes: EMA 0.999 instead of 0.9999 (whose horizon of 10^4
iterations exceeds such a run) with a warm-up of the decay. Two options go beyond the
reference and are off by default: ``--lr-schedule cosine`` and ``--zero-init`` (start from
the identity prediction). Pairs are built on the fly (``accelerators.shortcut.data``).
Checkpoint, schedule, EMA and curve come from ``bench.training``.

On a base model with its own sequence layout (Lumina-DiMOO) the network is DiMOO-Shortcut
(``accelerators.shortcut.networks``), trained as ``DiMOO-Shortcut/train_shortcut.py`` with its
README command (``--bottleneck_ratio 2 --mse_weight 1 --kl_weight 0 --ema_decay 0.9999 --lr 1e-4
--step_decay``, one pair per GPU): MSE over *every* position of the stream (``F.mse_loss(est_feat,
tgt_feat)``: prompt, specials and image rows; padding rows excluded here), the same optimiser,
schedule and EMA as above (so the same defaults), pairs from ``utils/shortcut.py``
(``accelerators.shortcut.dimoo_inputs``). ``--family`` forces either network.

Runs single-process or under ``torchrun --nproc-per-node W -m accelerators.shortcut.train``
(gloo backend on CPU; nccl with ``--device cuda``, each rank on its LOCAL_RANK GPU; each rank
trains on its own share of the images; rank 0 writes the checkpoint, the training curve and the
final weights).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from accelerators.shortcut.data import (
    Trajectories,
    all_pair_indices,
    available_shards,
    collection_conditions,
    dist_env,
    guarded,
    load_images,
    prompts_sha256,
    random_pair_indices,
    rank_device,
    read_manifest,
    split_images,
)
from accelerators.shortcut.model import ShortcutNetConfig, model_device
from accelerators.shortcut.networks import FAMILIES, MaskGITFamily, family_for
from accelerators.shortcut.weights import default_weights_path
from bench.protocol import BaseModel
from bench.training import (
    LRFactor,
    TrainingCurve,
    constant,
    ema_of,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    step_decay,
    warmup_cosine,
    warmup_ema_decay,
)

CHECKPOINT = "checkpoint.pt"
CURVE_FIELDS = (
    "iter",
    "lr",
    "train_loss",
    "val_mse",
    "val_cos",
    "val_mse_identity",
    "val_cos_identity",
    "elapsed_s",
)
LR_SCHEDULES = ("step", "cosine", "constant")


@dataclass(frozen=True)
class TrainOptions:
    """data: trajectory directory (``shortcut collect --out``). out: weights file (default: the
    shipped file for the model). work: checkpoint directory (default <data>/train-<out stem>).
    iters: optimiser steps. batch_size: pairs per step *per rank*. lr, weight_decay: AdamW.
    lr_schedule: "step" (x decay_factor after decay_at steps, the reference), "cosine" (to
    decay_factor * lr at the end) or "constant". ema: EMA decay of the shipped weights (0 = off).
    ema_warmup: ramp the EMA decay up from 0.1 (see ``ema_decay``; off = the reference's constant
    decay). zero_init: start the output projection at zero, i.e. from the identity prediction
    f_{i+1} = f_i (not in the reference, which starts from a random delta; with a bottleneck only).
    loss_reduction: "per-image" (reference: each pair's masked mean, then the batch mean) or
    "pooled" (one mean over every masked position of the batch).
    val_fraction: share of images held out. val_every / ckpt_every: iterations between
    validations (and curve rows) / checkpoints. val_pairs: validation pairs at most.
    curve: training-curve CSV (default results/training/shortcut[_nocross].csv when training the
        shipped weights, else <work>/curve.csv, so trial runs leave the committed curves alone).
    mlp_width: DiMOO-Shortcut's SwiGLU width (0 = the base model's, as the reference keeps it;
        smaller = a cheaper call, less capacity; not in the reference). MaskGIT-Shortcut sets its
        MLP by ``net.mlp_ratio`` instead.
    """

    data: str
    out: str = ""
    work: str = ""
    resume: bool = False
    iters: int = 2000
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-2
    lr_schedule: str = "step"
    decay_at: int = 1000
    decay_factor: float = 0.1
    ema: float = 0.999
    ema_warmup: bool = True
    zero_init: bool = False
    loss_reduction: str = "per-image"
    val_fraction: float = 0.05
    val_every: int = 200
    val_pairs: int = 2048
    ckpt_every: int = 200
    seed: int = 0
    curve: str = ""
    net: ShortcutNetConfig = field(default_factory=ShortcutNetConfig)
    family: str = "auto"
    mlp_width: int = 0
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.iters < 1 or self.batch_size < 1 or self.val_every < 1 or self.ckpt_every < 1:
            raise ValueError("iters, batch size, val_every and ckpt_every must be >= 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}"
            )
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"unknown loss reduction {self.loss_reduction!r}; choose one of {', '.join(LOSS_REDUCTIONS)}"
            )
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema decay must lie in [0, 1), got {self.ema}")
        if self.mlp_width < 0:
            raise ValueError(f"mlp_width must be >= 0 (0 = the base model's), got {self.mlp_width}")
        if self.family not in FAMILIES:
            raise ValueError(f"unknown network family {self.family!r}; choose one of {', '.join(FAMILIES)}")


def lr_schedule(options: TrainOptions) -> LRFactor:
    """The learning-rate multiplier as a function of the optimiser step."""
    if options.lr_schedule == "step":  # reference: MultiStepLR(milestones=[1000], gamma=0.1)
        return step_decay(options.decay_at, options.decay_factor)
    if options.lr_schedule == "cosine":  # no warm-up, down to decay_factor at the last step
        return warmup_cosine(options.iters, warmup=0, floor=options.decay_factor)
    return constant


def lr_factor(options: TrainOptions, it: int) -> float:
    """Learning-rate multiplier at optimiser step ``it``."""
    return lr_schedule(options)(it)


LOSS_REDUCTIONS = ("per-image", "pooled")


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor, reduction: str = "per-image") -> Tensor:
    """Mean squared error over the positions where ``mask`` (B, L) is True (all D features).

    "per-image" (the reference): each pair's mean over its own masked positions, then the
    mean over the batch, as MIGM-Shortcut's ``F.mse_loss`` on one image per GPU averaged by
    DDP (``MaskGIT-Shortcut/train_shortcut.py``, ``loss_fn``). "pooled": one mean over all
    masked positions of the batch, so pairs with more masked tokens weigh more. A pair with
    no masked position contributes 0 to the per-image mean.
    """
    weight = mask[..., None].to(pred.dtype)  # (B, L, 1)
    sq = (pred - target) ** 2 * weight  # (B, L, D)
    d = pred.shape[-1]
    if reduction == "pooled":
        return sq.sum() / (weight.sum() * d).clamp_min(1.0)
    if reduction != "per-image":
        raise ValueError(f"unknown loss reduction {reduction!r}; choose one of {', '.join(LOSS_REDUCTIONS)}")
    per_pair = sq.sum(dim=(1, 2)) / (weight.sum(dim=(1, 2)) * d).clamp_min(1.0)  # (B,)
    return per_pair.mean()


def iteration_seed(seed: int, rank: int, it: int) -> int:
    """The batch of iteration ``it`` on ``rank`` depends only on these: resuming is exact."""
    digest = hashlib.sha256(f"shortcut-train:{seed}:{rank}:{it}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------- validation
@torch.no_grad()
def validation_sums(net: torch.nn.Module, data: Trajectories | None, max_pairs: int, batch_size: int,
                    device: torch.device, model: BaseModel | None = None,
                    family=MaskGITFamily) -> Tensor:  # fmt: skip
    """Sums over held-out pairs: [squared error, elements, cosine, positions, identity squared
    error, identity cosine] on the family's loss positions (MaskGIT: the still-masked ones; DiMOO:
    every real row) (identity = predicting f_{i+1} = f_i)."""
    sums = torch.zeros(6, dtype=torch.float64)
    if data is None:
        return sums
    pairs = all_pair_indices(data.num_images, data.streams, data.steps)
    if len(pairs) > max_pairs:  # an evenly spread, deterministic subset
        pairs = pairs[torch.linspace(0, len(pairs) - 1, max_pairs).round().long()]
    was_training = net.training
    net.eval()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        b = family.pairs(model, data, chunk[:, 0], chunk[:, 1], chunk[:, 2], device)
        pred = family.predict(net, b)
        m = b.loss_mask
        d = pred.shape[-1]
        sums[0] += ((pred - b.target) ** 2)[m].sum().item()
        sums[1] += m.sum().item() * d
        sums[2] += torch.cosine_similarity(pred, b.target, dim=-1)[m].sum().item()
        sums[3] += m.sum().item()
        sums[4] += ((b.prev - b.target) ** 2)[m].sum().item()
        sums[5] += torch.cosine_similarity(b.prev, b.target, dim=-1)[m].sum().item()
    net.train(was_training)
    return sums


def summarise(sums: Tensor) -> dict[str, float]:
    if sums[1] == 0:
        return {k: float("nan") for k in ("val_mse", "val_cos", "val_mse_identity", "val_cos_identity")}
    return {
        "val_mse": float(sums[0] / sums[1]),
        "val_cos": float(sums[2] / sums[3]),
        "val_mse_identity": float(sums[4] / sums[1]),
        "val_cos_identity": float(sums[5] / sums[3]),
    }


# ------------------------------------------------------------------------------ helpers
def _all_reduce(x: Tensor) -> Tensor:
    if dist.is_initialized():
        dist.all_reduce(x)
    return x


def ddp_wrap(net: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """DDP on CPU (gloo) without re-syncing the frozen embedding buffers every forward (they
    are identical on every rank); ``forward_sync_buffers`` replaces ``broadcast_buffers`` in
    newer torch."""
    ddp = torch.nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return ddp(net, forward_sync_buffers=False)
    return ddp(net, broadcast_buffers=False)


def ema_decay(options: TrainOptions, updates: int) -> float:
    """EMA decay after ``updates`` optimiser steps: constant (the reference's AveragedModel),
    or with ``ema_warmup`` ramped up (``bench.training.warmup_ema_decay``), so a short run's
    average is not dominated by the random initial weights."""
    if not options.ema_warmup:
        return options.ema
    return warmup_ema_decay(options.ema, updates)


def _check_data_matches(model: BaseModel, manifest: dict[str, Any], data: str) -> None:
    if manifest["fingerprint"] != model.fingerprint():
        raise ValueError(
            f"{data} holds trajectories of base model {manifest['base_model']!r} (fingerprint "
            f"{manifest['fingerprint']}), not of {model.name!r} (fingerprint {model.fingerprint()})"
        )
    if manifest["dim"] != model.dim or manifest["seq_len"] != model.seq_len:
        raise ValueError(f"{data}: feature shape (L={manifest['seq_len']}, D={manifest['dim']}) does not match "
                         f"the base model (L={model.seq_len}, D={model.dim})")  # fmt: skip
    wanted = manifest.get("prompts_sha256")
    if (
        wanted is not None
        and prompts_sha256(model, collection_conditions(model, manifest["images"], manifest["seed"]))
        != wanted
    ):
        raise ValueError(f"{data} was collected from other prompts than the base model's (spec "
                         f"{manifest.get('model_spec')!r}); pass the same prompts= file")  # fmt: skip


def _resolve_paths(model: BaseModel, options: TrainOptions, family=MaskGITFamily) -> tuple[Path, Path, Path]:
    out = (
        Path(options.out)
        if options.out
        else default_weights_path(model.name, "nocross" if options.net.no_cross_attention else "default")
    )
    work = Path(options.work) if options.work else Path(options.data) / f"train-{out.stem}"
    suffix = "_nocross" if options.net.no_cross_attention else ""
    if family is not MaskGITFamily:  # the committed shortcut*.csv curves are the MaskGIT shortcut's
        suffix = f"_{model.name}{suffix}"
    shipped = not options.out  # training the shipped weights: their curve is a committed result
    default_curve = Path("results") / "training" / f"shortcut{suffix}.csv" if shipped else work / "curve.csv"
    curve = Path(options.curve) if options.curve else default_curve
    return out, work, curve


# --------------------------------------------------------------------------------- train
def train(model: BaseModel, options: TrainOptions) -> dict[str, Any]:
    """Train a shortcut for ``model`` on ``options.data``; returns the final validation metrics
    and the weights path (on every rank). Sets up / tears down a gloo process group when run
    under torchrun with WORLD_SIZE > 1 and none exists yet."""
    rank, world = dist_env()
    own_group = world > 1 and not dist.is_initialized()
    if own_group:
        backend = "nccl" if model_device(model).type == "cuda" else "gloo"  # the reference: nccl on GPUs
        dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        return _train(model, options, rank, world)
    finally:
        if own_group:
            dist.destroy_process_group()


def _load_data(model: BaseModel, options: TrainOptions, rank: int, world: int,
               lazy: bool = False) -> tuple[dict[str, Any], int, Trajectories, Trajectories | None]:  # fmt: skip
    """(manifest, images collected, this rank's training share, its validation share or None)."""
    manifest = read_manifest(options.data)
    _check_data_matches(model, manifest, options.data)
    shards = available_shards(options.data, manifest)
    total = sum(count for _, _, count in shards)
    if len(shards) < len(manifest["shards"]) and rank == 0:
        print(f"warning: {options.data}: {len(manifest['shards']) - len(shards)} of {len(manifest['shards'])} "
              "shards are not collected yet; training on the finished ones")  # fmt: skip
    train_idx, val_idx = split_images(total, options.val_fraction)
    my_train, my_val = train_idx[rank::world], val_idx[rank::world]
    if not my_train:
        raise ValueError(f"{options.data}: {len(train_idx)} training images cannot feed {world} ranks")
    train_data = load_images(options.data, manifest, my_train, lazy)
    val_data = load_images(options.data, manifest, my_val, lazy) if my_val else None
    if train_data.steps < 2:
        raise ValueError(f"{options.data}: trajectories of N={train_data.steps} steps give no training pairs")
    return manifest, total, train_data, val_data


def _initial_net(model: BaseModel, options: TrainOptions, family=MaskGITFamily) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # same initial weights on every rank, no global RNG touched
        torch.manual_seed(options.seed)
        net = family.new_net(model, options.net, options.mlp_width).train()
        if options.zero_init and isinstance(net.proj_out, torch.nn.Linear):
            torch.nn.init.zeros_(net.proj_out.weight)  # start at the identity f_{i+1} = f_i
            torch.nn.init.zeros_(net.proj_out.bias)
    return net


def _resume(path: Path, parts: dict[str, Any], model: BaseModel, options: TrainOptions,
            device: torch.device, rank: int) -> tuple[int, dict[str, float]]:  # fmt: skip
    """Restore ``parts`` from the checkpoint at ``path`` (only with --resume); returns the
    iteration reached and the latest validation summary ((0, {}) without a checkpoint)."""
    if path.is_file() and not options.resume:
        raise FileExistsError(
            f"{path} holds an earlier run; pass --resume to continue it or choose another --work"
        )

    def same_network(extra: dict[str, Any]) -> None:
        if extra.get("net_config") != asdict(options.net) or extra.get("fingerprint") != model.fingerprint():
            raise ValueError(f"{path} was made for another network or base model; choose another --work")

    start_iter, extra = load_checkpoint(path, parts, map_location=device, check=same_network)
    if start_iter and rank == 0:
        print(f"resuming {path} at iteration {start_iter}")
    elif options.resume and rank == 0:
        print(f"no checkpoint in {path.parent}; starting from scratch")
    return start_iter, extra.get("metrics", {})


def _train(model: BaseModel, options: TrainOptions, rank: int, world: int) -> dict[str, Any]:
    device = model_device(model)
    family = family_for(model, options.family)
    manifest, total, train_data, val_data = _load_data(model, options, rank, world, family.lazy_features)
    out, work, curve_path = _resolve_paths(model, options, family)
    net = _initial_net(model, options, family)
    ema = ema_of(net, lambda updates: ema_decay(options, updates))
    shipped = ema.module if options.ema > 0 else net  # validated and written
    wrapped = ddp_wrap(net) if world > 1 else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = lr_scheduler(optimizer, lr_schedule(options))
    parts = {"net": net, "ema": ema, "optimizer": optimizer, "scheduler": scheduler}
    ckpt_path = work / CHECKPOINT
    # metrics: the latest validation summary
    start_iter, metrics = _resume(ckpt_path, parts, model, options, device, rank)

    curve = TrainingCurve(curve_path, CURVE_FIELDS, "iter", start_iter) if rank == 0 else None
    generator = torch.Generator()
    bar = tqdm(total=options.iters, initial=start_iter, disable=rank != 0 or not options.show_progress,
               desc="train shortcut", unit="it")  # fmt: skip
    started = time.perf_counter()
    loss_sum, loss_count = 0.0, 0
    for it in range(start_iter, options.iters):
        generator.manual_seed(iteration_seed(options.seed, rank, it))
        batch = family.pairs(
            model, train_data, *random_pair_indices(train_data, options.batch_size, generator), device
        )
        pred = family.predict(wrapped, batch)
        loss = masked_mse(pred, batch.target, batch.loss_mask, options.loss_reduction)
        optimizer_step(loss, optimizer, scheduler)
        if options.ema > 0:
            ema.update_parameters(net)
        loss_sum, loss_count = loss_sum + loss.item(), loss_count + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4g}")

        done = it + 1
        if done % options.val_every == 0 or done == options.iters:
            share = math.ceil(options.val_pairs / world)
            sums = _all_reduce(validation_sums(shipped, val_data, share, options.batch_size, device, model,
                                               family))  # fmt: skip
            train_loss = _all_reduce(torch.tensor([loss_sum, loss_count], dtype=torch.float64))
            metrics = summarise(sums)
            if curve is not None:
                curve.write({"iter": done, "lr": optimizer.param_groups[0]["lr"],
                             "train_loss": float(train_loss[0] / max(train_loss[1], 1)), **metrics,
                             "elapsed_s": round(time.perf_counter() - started, 1)})  # fmt: skip
                bar.write(f"iter {done}: val mse {metrics['val_mse']:.4g} (identity {metrics['val_mse_identity']:.4g}),"
                          f" cos {metrics['val_cos']:.4f} (identity {metrics['val_cos_identity']:.4f})")  # fmt: skip
            loss_sum, loss_count = 0.0, 0
        if rank == 0 and (done % options.ckpt_every == 0 or done == options.iters):
            binding = {"net_config": asdict(options.net), "fingerprint": model.fingerprint()}
            save_checkpoint(
                ckpt_path, done, parts, {**binding, "options": asdict(options), "metrics": metrics}
            )
    bar.close()

    if rank == 0:
        extra = {"iters": options.iters, "data": str(options.data), "images": total,
                 "train_options": {k: v for k, v in asdict(options).items() if k != "net"}, **metrics}  # fmt: skip
        family.save(out, shipped, model, manifest["steps"], extra)
        print(
            f"wrote {out} (base model {model.name!r}, fingerprint {model.fingerprint()}, N={manifest['steps']})"
        )
    if dist.is_initialized():
        # Free DDP's reducer (and the gloo work it holds) before the group is torn down: gloo
        # aborts the process if such work outlives the group.
        del wrapped
        gc.collect()
        dist.barrier()
    return {"weights": str(out), "curve": str(curve_path), **metrics}


# ----------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = TrainOptions(data="")
    n = ShortcutNetConfig()
    parser.add_argument("--data", required=True, help="trajectory directory written by `shortcut collect`")
    parser.add_argument("--model", default="", help="base model spec (default: the one recorded in the data)")
    parser.add_argument("--out", default="", help="weights file (default accelerators/shortcut/weights/"
                                                  "<model>_shortcut[_nocross].safetensors)")  # fmt: skip
    parser.add_argument("--work", default="", help="checkpoint directory (default <data>/train-<out name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")
    parser.add_argument("--iters", type=int, default=d.iters, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="pairs per step per process")
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (reference 1e-4)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule)
    parser.add_argument(
        "--decay-at", type=int, default=d.decay_at, help="step schedule: iteration of the decay"
    )
    parser.add_argument("--decay-factor", type=float, default=d.decay_factor)
    parser.add_argument("--ema", type=float, default=d.ema, help="EMA decay (0 = off; reference 0.9999)")
    parser.add_argument(
        "--no-ema-warmup", action="store_true", help="constant EMA decay from the start (reference)"
    )
    parser.add_argument(
        "--zero-init",
        action="store_true",
        help="zero the output projection: training starts from f_{i+1} = f_i (not in the reference)",
    )
    parser.add_argument(
        "--loss-reduction",
        choices=LOSS_REDUCTIONS,
        default=d.loss_reduction,
        help="per-image: mean per pair, then over the batch (reference); pooled: one mean over all positions",
    )
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of images held out")
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--val-pairs", type=int, default=d.val_pairs)
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--curve", default="", help="training-curve CSV (default results/training/shortcut*.csv)"
    )
    parser.add_argument("--ratio", type=float, default=n.ratio, help="bottleneck ratio D / d (reference 2)")
    parser.add_argument("--num-blocks", type=int, default=n.num_blocks, help="cross+self attention pairs")
    parser.add_argument("--heads", type=int, default=n.heads)
    parser.add_argument("--mlp-ratio", type=float, default=n.mlp_ratio)
    parser.add_argument(
        "--no-time-embedding", action="store_true", help="ablation: no adaLN time conditioning"
    )
    parser.add_argument("--no-cross-attention", action="store_true", help="ablation: ignore the new tokens")
    parser.add_argument("--mlp-width", type=int, default=d.mlp_width,
                        help="DiMOO-Shortcut's MLP width (default 0 = the base model's, the reference; "
                             "smaller = cheaper calls, not in the reference)")  # fmt: skip
    parser.add_argument("--family", choices=FAMILIES, default=d.family,
                        help="network: auto (DiMOO-Shortcut for a base model with its own sequence layout, "
                             "e.g. dimoo; MaskGIT-Shortcut otherwise), maskgit or dimoo; on dimoo --heads and "
                             "--mlp-ratio are the base model's")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    net = ShortcutNetConfig(ratio=args.ratio, num_blocks=args.num_blocks, heads=args.heads, mlp_ratio=args.mlp_ratio,
                            time_embedding=not args.no_time_embedding,
                            no_cross_attention=args.no_cross_attention)  # fmt: skip
    return TrainOptions(
        data=args.data, out=args.out, work=args.work, resume=args.resume, iters=args.iters,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
        decay_at=args.decay_at, decay_factor=args.decay_factor, ema=args.ema, ema_warmup=not args.no_ema_warmup,
        zero_init=args.zero_init, loss_reduction=args.loss_reduction, val_fraction=args.val_fraction,
        val_every=args.val_every, val_pairs=args.val_pairs, ckpt_every=args.ckpt_every, seed=args.seed,
        curve=args.curve, net=net, family=args.family, mlp_width=args.mlp_width,
        show_progress=not args.no_progress,
    )  # fmt: skip


def run(args: argparse.Namespace, model: BaseModel | None = None) -> int:
    """Entry point of the CLI command (``model`` lets tests pass a model object)."""
    return guarded("shortcut train", lambda: _run(args, model))


def _run(args: argparse.Namespace, model: BaseModel | None) -> int:
    options = options_from_args(args)
    if model is None:
        from bench.plugins import get_manager

        spec = args.model or read_manifest(args.data).get("model_spec", "")
        model = get_manager().make_base_model(spec, rank_device(args.device))
    train(model, options)
    return 0


def main(argv: list[str] | None = None, model: BaseModel | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m accelerators.shortcut.train",
                                                   description=__doc__.splitlines()[0]))  # fmt: skip
    return run(parser.parse_args(argv), model)


if __name__ == "__main__":
    sys.exit(main())
