"""CLI entry of the text-to-image CLIP, to be wired as ``migm-bench train-base clip-t2i``.

    migm-bench train-base clip-t2i --out base_models/fashion_t2i/weights   # train, then evaluate

``add_clip_arguments(parser)`` adds the options to a (sub)parser; ``run_clip(args)`` trains
(resuming from --work), writes ``clip-t2i.safetensors`` + ``clip-t2i.json`` into --out,
evaluates them through the ``clip_score`` loader and prints the metadata and accuracies as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_clip_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", default=".migm-work/clip-t2i", help="folder for clip-t2i.safetensors + clip-t2i.json")
    p.add_argument("--work", default=".migm-work", help="checkpoints in progress (resume from here)")
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default $MIGM_FASHION_MNIST or Debian's)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per contrastive batch (default 256)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first n train images")
    p.add_argument("--eval-images", type=int, default=2000, help="test images for the evaluation (0: skip it)")
    p.add_argument("--config", default=None, help="open_clip model-config JSON (default: CLIP_T2I_CONFIG)")
    return p


def run_clip(args: argparse.Namespace) -> int:
    from base_models.fashion_t2i.clip import ClipTrainSettings, evaluate_clip, train_clip

    given = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "train_limit": args.train_limit}
    settings = ClipTrainSettings(**{k: v for k, v in given.items() if v is not None})
    config = json.loads(Path(args.config).read_text()) if args.config else None
    meta = train_clip(args.out, args.work, settings, args.data, config)
    if args.eval_images > 0:
        meta["evaluation"] = evaluate_clip(args.out, args.data, images=args.eval_images, seed=settings.seed)
    print(json.dumps(meta, indent=1, default=str))
    return 0
