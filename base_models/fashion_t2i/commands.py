"""CLI entry of the text-to-image CLIP, to be wired as ``migm-bench train-base clip-t2i``.

    migm-bench train-base clip-t2i --ship   # train (~40 min on 2 cores), ship, evaluate

``add_clip_arguments(parser)`` adds every option to a parser of its own; a parser that already
has ``train-base``'s shared options (--out --work --data --steps --batch-size --seed --ship)
takes only ``add_clip_options(parser)``. ``run_clip(args)`` trains (resuming from --work),
writes ``clip-t2i.safetensors`` + ``clip-t2i.json`` into the folder --out (default
<work>/clip-t2i; with --ship ``base_models/fashion_t2i/weights``), evaluates them through the
``clip_score`` loader and prints the metadata and accuracies as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHIPPED = Path(__file__).parent / "weights"


def add_clip_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options only the CLIP has."""
    p.add_argument(
        "--train-limit", type=int, default=None, help="clip-t2i: use only the first n train images"
    )
    p.add_argument(
        "--eval-images", type=int, default=2000, help="clip-t2i: test images to evaluate on (0: skip)"
    )
    p.add_argument(
        "--config", default=None, help="clip-t2i: open_clip model-config JSON (default CLIP_T2I_CONFIG)"
    )
    return p


def add_clip_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """All options, ``train-base``'s shared ones included."""
    p.add_argument("--out", default=None, help="folder for clip-t2i.safetensors + clip-t2i.json")
    p.add_argument("--ship", action="store_true", help=f"write into {SHIPPED} (default --out)")
    p.add_argument("--work", default=".migm-work", help="checkpoints in progress (resume from here)")
    p.add_argument(
        "--data", default=None, help="Fashion-MNIST folder (default $MIGM_FASHION_MNIST or Debian's)"
    )
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per contrastive batch (default 256)")
    p.add_argument("--seed", type=int, default=None)
    return add_clip_options(p)


def clip_out(args: argparse.Namespace) -> Path:
    """--out, else the shipped folder with --ship, else <work>/clip-t2i."""
    if args.out:
        return Path(args.out)
    return SHIPPED if getattr(args, "ship", False) else Path(args.work) / "clip-t2i"


def run_clip(args: argparse.Namespace) -> int:
    from base_models.fashion_t2i.clip import ClipTrainSettings, evaluate_clip, train_clip

    given = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_limit": args.train_limit,
    }
    settings = ClipTrainSettings(**{k: v for k, v in given.items() if v is not None})
    config = json.loads(Path(args.config).read_text()) if args.config else None
    out = clip_out(args)
    meta = train_clip(out, args.work, settings, args.data, config)
    if args.eval_images > 0:
        meta["evaluation"] = evaluate_clip(out, args.data, images=args.eval_images, seed=settings.seed)
    print(json.dumps(meta, indent=1, default=str))
    return 0
