"""CLI entries of the text-to-image default, wired into ``migm-bench train-base``.

    migm-bench train-base clip-t2i --ship   # train (~40 min on 2 cores), ship, evaluate
    migm-bench train-base vqvae-t2i --ship  # diffusers VQModel (~8-13 min): weights/dimoo-t2i/vqvae/
    migm-bench train-base dimoo-t2i --ship  # LLaDA model (~50 min): the rest of weights/dimoo-t2i/
    migm-bench train-base attributes-t2i --ship --eval-images 10000  # attribute classifier (~10 min)

``run_vqvae`` / ``run_dimoo`` write into the checkpoint folder --out (default
<work>/dimoo-t2i; with --ship ``base_models/fashion_t2i/weights/dimoo-t2i``): the VQ into its
``vqvae/``, then the transformer, config.json and tokenizer beside it (the VQ read from
--vqvae, default that same folder), so the two commands with the same --out or --ship leave a
complete Lumina-DiMOO checkpoint folder: ``--model dimoo:checkpoint=<folder>,resolution=32`` (once the
``dimoo`` plugin takes its token grid from the VQ's downsampling factor, 4 here).

``add_clip_arguments(parser)`` adds every option to a parser of its own; a parser that already
has ``train-base``'s shared options (--out --work --data --steps --batch-size --seed --ship)
takes only ``add_clip_options(parser)``. ``run_clip(args)`` trains (resuming from --work),
writes ``clip-t2i.safetensors`` + ``clip-t2i.json`` into the folder --out (default
<work>/clip-t2i; with --ship ``base_models/fashion_t2i/weights``), evaluates them through the
``clip_score`` loader and prints the metadata and accuracies as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

SHIPPED = Path(__file__).parent / "weights"


def add_clip_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options only the text-to-image trainers have (clip-t2i, vqvae-t2i, dimoo-t2i)."""
    p.add_argument("--train-limit", type=int, default=None, help="*-t2i: use only the first n train images")
    p.add_argument(
        "--eval-images",
        type=int,
        default=2000,
        help="clip-t2i, vqvae-t2i, attributes-t2i: test (and held-out) images to evaluate on (0: skip)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="*-t2i: model-config JSON (clip-t2i: open_clip's, default CLIP_T2I_CONFIG; vqvae-t2i: diffusers "
        "VQModel's fields replacing VQVAE_T2I_CONFIG's; dimoo-t2i: LLaDA shape fields replacing "
        "DIMOO_T2I_SHAPE's)",
    )
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default=None,
        help="dimoo-t2i: bfloat16 (default, the shipped model: CPU autocast, faster on CPUs with "
        "bfloat16 units) or float32 (for CPUs without them; a slightly different model)",
    )
    p.add_argument(
        "--vqvae",
        default=None,
        help="dimoo-t2i: folder holding the trained vqvae/ (default: the output folder)",
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


def checkpoint_out(args: argparse.Namespace) -> Path:
    """The DiMOO checkpoint folder: --out, else the shipped one with --ship, else <work>/dimoo-t2i."""
    if args.out:
        return Path(args.out)
    return SHIPPED / "dimoo-t2i" if getattr(args, "ship", False) else Path(args.work) / "dimoo-t2i"


def _settings(cls, args: argparse.Namespace):
    """``cls`` (a frozen settings dataclass) with the options given on the command line; an
    option the model's trainer does not have is a one-line error."""
    from bench.run_command import CLIError

    given = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_limit": args.train_limit,
        "precision": getattr(args, "precision", None),
    }
    given = {k: v for k, v in given.items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls)}
    for key in given:
        if key not in known:
            raise CLIError(
                f"--{key.replace('_', '-')} does not apply to this model ({cls.__name__} has no {key})"
            )
    return cls(**given)


def _config(args: argparse.Namespace) -> dict | None:
    return json.loads(Path(args.config).read_text()) if args.config else None


def _curve(args: argparse.Namespace, name: str) -> Path | None:
    """Shipped runs keep their curve with the project's (results/training/); others in --work."""
    return Path("results/training") / f"{name}.csv" if getattr(args, "ship", False) else None


def run_vqvae(args: argparse.Namespace) -> int:
    from base_models.fashion_t2i.train_vqvae import VQTrainSettings, train_vqvae

    meta = train_vqvae(checkpoint_out(args), args.work, _settings(VQTrainSettings, args), args.data,
                       _config(args), args.eval_images, _curve(args, "vqvae_t2i"))  # fmt: skip
    print(json.dumps(meta, indent=1, default=str))
    return 0


def run_dimoo(args: argparse.Namespace) -> int:
    from base_models.fashion_t2i.train_dimoo import DiMOOTrainSettings, train_dimoo

    out = checkpoint_out(args)
    vqvae = Path(args.vqvae) if args.vqvae else out
    meta = train_dimoo(out, vqvae, args.work, _settings(DiMOOTrainSettings, args), args.data, _config(args),
                       _curve(args, "dimoo_t2i"))  # fmt: skip
    print(json.dumps(meta, indent=1, default=str))
    return 0


def run_attributes(args: argparse.Namespace) -> int:
    """The attribute classifier: ``attributes-t2i.safetensors`` in --out (a folder), else the
    shipped weights folder with --ship, else <work>/attributes-t2i/; evaluated on the first
    --eval-images images of the test and held-out splits."""
    from base_models.fashion_t2i.attributes import WEIGHTS_FILE, AttributeTrainSettings, train_attributes

    out = Path(args.out) if args.out else SHIPPED if args.ship else Path(args.work) / "attributes-t2i"
    meta = train_attributes(out / WEIGHTS_FILE, args.work, _settings(AttributeTrainSettings, args), args.data,
                            args.eval_images, _curve(args, "attributes_t2i"))  # fmt: skip
    print(json.dumps(meta, indent=1, default=str))
    return 0


def run_clip(args: argparse.Namespace) -> int:
    from base_models.fashion_t2i.clip import ClipTrainSettings, evaluate_clip, train_clip

    settings = _settings(ClipTrainSettings, args)
    out = clip_out(args)
    meta = train_clip(out, args.work, settings, args.data, _config(args))
    if args.eval_images > 0:
        meta["evaluation"] = evaluate_clip(out, args.data, images=args.eval_images, seed=settings.seed)
    print(json.dumps(meta, indent=1, default=str))
    return 0
