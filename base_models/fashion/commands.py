"""CLI commands of the embedded default: ``migm-bench train-base ...`` and ``migm-bench grid``.

    migm-bench train-base tokenizer   # VQGAN, ~10 min on 2 cores
    migm-bench train-base maskgit     # MaskTransformer, ~1 h on 2 cores
    migm-bench train-base classifier  # feature network for FID / class accuracy, ~5 min
    migm-bench train-base clip-t2i    # small open_clip CLIP on captioned Fashion-MNIST (text-to-image)
    migm-bench train-base vqvae-t2i   # diffusers VQModel of the text-to-image default, ~8-13 min
    migm-bench train-base dimoo-t2i   # LLaDA model in Lumina-DiMOO's checkpoint layout, ~50 min
    migm-bench train-base attributes-t2i  # attribute classifier of the text-to-image metrics, ~5.5 min
Each resumes from its checkpoint in --work after a stop and ships safetensors weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from base_models.fashion_t2i.commands import add_clip_options
from bench.hookspecs import hookimpl

WEIGHTS = Path(__file__).parent / "weights"
# text-to-image trainers: what -> function of base_models.fashion_t2i.commands
T2I_COMMANDS = {
    "clip-t2i": "run_clip",
    "vqvae-t2i": "run_vqvae",
    "dimoo-t2i": "run_dimoo",
    "attributes-t2i": "run_attributes",
}


def _out_path(args: argparse.Namespace, work: Path, name: str) -> Path:
    """Where ``train-base`` writes: --out, else the work folder; the shipped weights only with --ship."""
    out = Path(args.out) if args.out else (WEIGHTS / name if args.ship else work / name)
    if out.resolve().parent == WEIGHTS.resolve() and not args.ship:
        from bench.cli import CLIError

        raise CLIError(f"{out} is a shipped weights file; pass --ship to replace it")
    return out


def _train_base(args: argparse.Namespace) -> int:
    work = Path(args.work)
    if args.what in T2I_COMMANDS:
        from base_models.fashion_t2i import commands

        return getattr(commands, T2I_COMMANDS[args.what])(args)
    if args.what == "tokenizer":
        from base_models.fashion.train_tokenizer import TokenizerTrainSettings, train_tokenizer

        settings = TokenizerTrainSettings(**{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                                                ("seed", args.seed)) if v is not None})  # fmt: skip
        meta = train_tokenizer(_out_path(args, work, "tokenizer.safetensors"), work, settings, args.data)
    elif args.what == "maskgit":
        from base_models.fashion.train_maskgit import MaskGITTrainSettings, train_maskgit

        settings = MaskGITTrainSettings(**{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                                             ("seed", args.seed)) if v is not None})  # fmt: skip
        meta = train_maskgit(_out_path(args, work, "maskgit.safetensors"),
                             Path(args.tokenizer or WEIGHTS / "tokenizer.safetensors"), work, settings, args.data)  # fmt: skip
    else:
        from base_models.fashion.classifier import train_classifier

        kwargs = {k: v for k, v in (("epochs", args.steps), ("batch_size", args.batch_size), ("seed", args.seed))
                  if v is not None}  # fmt: skip
        meta = train_classifier(out=_out_path(args, work, "classifier.safetensors"), work=work, data_root=args.data,
                                **kwargs)  # fmt: skip
    print(json.dumps(meta, indent=1, default=str))
    return 0


def _grid(args: argparse.Namespace) -> int:
    from base_models.fashion.grid import save_sample_grid

    path = save_sample_grid(Path(args.out), per_class=args.per_class, seed=args.seed, accel=args.accel)
    print(f"wrote {path}")
    return 0


@hookimpl
def register_commands(subparsers):
    p = subparsers.add_parser(
        "train-base",
        help="train the embedded defaults' tokenizer / maskgit / classifier / clip-t2i / vqvae-t2i / "
        "dimoo-t2i / attributes-t2i",
    )
    p.add_argument("what", choices=["tokenizer", "maskgit", "classifier", *T2I_COMMANDS])
    p.add_argument("--steps", type=int, default=None, help="training steps (epochs for the classifier)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--out",
        default=None,
        help="weights file to write (default: <work>/<what>.safetensors); *-t2i: a folder (clip-t2i: "
        "<work>/clip-t2i; vqvae-t2i, dimoo-t2i: the DiMOO checkpoint folder, <work>/dimoo-t2i; attributes-t2i: "
        "<work>/attributes-t2i)",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="replace the shipped weights in base_models/fashion/weights (and their INTEGRITY.json); "
        "*-t2i: in base_models/fashion_t2i/weights",
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer weights for `maskgit` (default: shipped)")
    p.add_argument("--work", default=".migm-work", help="checkpoints in progress (resume from here)")
    p.add_argument(
        "--data", default=None, help="Fashion-MNIST folder (default $MIGM_FASHION_MNIST or Debian's)"
    )
    add_clip_options(p)
    p.set_defaults(func=_train_base)

    g = subparsers.add_parser("grid", help="sample grid PNG of the embedded default (one row per class)")
    g.add_argument("--out", default="results/default/samples.png")
    g.add_argument("--per-class", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--accel", default="vanilla", help="accelerator spec, e.g. shortcut:steps=16,budget=4")
    g.set_defaults(func=_grid)
