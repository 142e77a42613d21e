"""``migm-bench shortcut collect``: record the base model's feature trajectories.

Reference: Kaiwen-Zhu/MIGM-Shortcut, ``MaskGIT-Shortcut/makedata.py`` and
``Trainer/vit.py`` (``sample_makedata``): vanilla sampling at the training N (15 for
ImageNet MaskGIT) over random classes; per image, the last-layer features of every step for
the conditional and the unconditional stream, the step at which every token was revealed
(``generation_order``) and the final tokens. Here the sampling goes through the one generic
loop (``bench.sampling.sample`` with ``record_features=True``) and the files are sharded
safetensors with a JSON manifest (layout in ``accelerators.shortcut.data``).

Resumable: a shard is written to a temporary name and renamed when complete, and finished
shards are skipped. Shardable across processes: ``torchrun --nproc-per-node W -m
accelerators.shortcut.collect ...``; rank r takes shards r, r + W, ... (RANK / WORLD_SIZE
from the environment, no process group; ``--device cuda`` is the rank's LOCAL_RANK GPU). Every
shard draws its conditions and sampling noise from a generator seeded by (seed, shard index), so
the data do not depend on W.

Text-to-image base models (Lumina-DiMOO, ``dimoo:checkpoint=DIR,prompts=FILE``): as
``DiMOO-Shortcut/makedata.py``, image j of the collection is generated from the model's condition
j (``model.conditions(images, ...)``: the prompt file's line j mod its length), so shards cover
the prompts in order; the manifest keeps a hash of those prompts and training checks it. The
features are the whole padded streams (L = the model's ``seq_len``: prompt, specials, image rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from accelerators.shortcut.data import (
    FORMAT,
    MANIFEST,
    STREAM_KEYS,
    collection_conditions,
    dist_env,
    guarded,
    prompts_sha256,
    rank_device,
    shard_name,
    shard_plan,
    shard_seed,
    write_json_atomic,
)
from accelerators.shortcut.model import model_device
from accelerators.vanilla import Vanilla, VanillaConfig
from bench.protocol import BaseModel, SamplingSettings
from bench.results import atomic_save_safetensors
from bench.sampling import sample

# manifest keys that must agree for a directory to be resumed
_IDENTITY_KEYS = ("format", "base_model", "fingerprint", "steps", "sampling", "seed", "images", "shard_size",
                  "prompts_sha256")  # fmt: skip


def sampling_for(model: BaseModel, steps: int) -> SamplingSettings:
    """The model's default sampling settings at N = ``steps`` (0 = the model's own N)."""
    base = model.default_sampling
    return dataclasses.replace(base, steps=steps) if steps else base


def build_manifest(model: BaseModel, settings: SamplingSettings, *, images: int, shard_size: int, seed: int,
                   model_spec: str, cond: torch.Tensor | None = None) -> dict[str, Any]:  # fmt: skip
    manifest = {
        "format": FORMAT,
        "base_model": model.name,
        "model_spec": model_spec or model.name,
        "fingerprint": model.fingerprint(),
        "steps": settings.steps,
        "sampling": dataclasses.asdict(settings),
        "streams": 2 if settings.cfg_weight != 0 else 1,
        "seq_len": model.seq_len,
        "num_image_tokens": model.num_image_tokens,
        "dim": model.dim,
        "features_dtype": "float16",
        "seed": seed,
        "images": images,
        "shard_size": shard_size,
        "shards": [
            {"file": shard_name(i), "images": n} for i, n in enumerate(shard_plan(images, shard_size))
        ],
    }
    digest = prompts_sha256(model, cond)
    if digest is not None:  # text-to-image: the prompts are part of what was collected
        manifest["prompts_sha256"] = digest
    return manifest


def prepare_directory(out: Path, manifest: dict[str, Any]) -> None:
    """Create ``out`` with ``manifest``, or check that the manifest already there describes the
    same collection (then finished shards are kept and skipped)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in _IDENTITY_KEYS if old.get(k) != manifest.get(k)]
        if diff:
            details = ", ".join(f"{k}: {old.get(k)!r} there vs {manifest.get(k)!r} now" for k in diff)
            raise ValueError(f"{out} holds a different trajectory collection ({details}); "
                             "use another --out or the same settings to resume")  # fmt: skip
        return
    write_json_atomic(path, manifest)


@torch.no_grad()
def collect_shard(model: BaseModel, settings: SamplingSettings, count: int, seed: int, batch_size: int,
                  progress: tqdm | None = None, cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Sample ``count`` images with vanilla at ``settings`` and return the shard tensors; ``cond``
    (count,) their conditions (None: drawn from the shard's generator)."""
    generator = torch.Generator().manual_seed(seed)
    if cond is None:
        cond = model.conditions(count, generator)  # (count,)
    else:
        cond = cond.to(model_device(model))
    vanilla = Vanilla(VanillaConfig(steps=settings.steps))
    streams = 2 if settings.cfg_weight != 0 else 1
    feats: list[list[torch.Tensor]] = [[] for _ in range(streams)]
    reveal, tokens = [], []
    for start in range(0, count, batch_size):
        c = cond[start : start + batch_size]
        n = c.shape[0]
        result = sample(model, vanilla, c, generator, settings, record_features=True)
        stacked = torch.stack(result.features, dim=1).to(torch.float16).cpu()  # (S * n, N, L, D)
        for s in range(streams):  # rows: [cond; uncond]
            feats[s].append(stacked[s * n : (s + 1) * n])
        reveal.append(result.reveal_step.cpu())
        tokens.append(result.tokens.cpu())
        if progress is not None:
            progress.update(n)
    out = {STREAM_KEYS[s]: torch.cat(feats[s]).contiguous() for s in range(streams)}
    out.update(reveal_step=torch.cat(reveal), tokens=torch.cat(tokens), cond=cond.cpu().long())
    return out


def collect(
    model: BaseModel,
    out: str | Path,
    *,
    steps: int = 0,
    images: int = 1000,
    batch_size: int = 16,
    seed: int = 0,
    shard_size: int = 64,
    model_spec: str = "",
    rank: int = 0,
    world: int = 1,
    show_progress: bool = True,
) -> list[Path]:
    """Collect trajectories into ``out``; returns the shard files this rank wrote (finished
    shards already present are skipped)."""
    out = Path(out)
    settings = sampling_for(model, steps)
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    all_cond = collection_conditions(model, images, seed)
    manifest = build_manifest(model, settings, images=images, shard_size=shard_size, seed=seed,
                              model_spec=model_spec, cond=all_cond)  # fmt: skip
    prepare_directory(out, manifest)
    mine = [(i, s) for i, s in enumerate(manifest["shards"]) if i % world == rank]
    todo = [(i, s) for i, s in mine if not (out / s["file"]).is_file()]
    written: list[Path] = []
    bar = tqdm(total=sum(s["images"] for _, s in todo), unit="img", disable=not show_progress,
               desc=f"collect rank {rank}/{world}" if world > 1 else "collect")  # fmt: skip
    for index, shard in todo:
        start = index * shard_size
        cond = None if all_cond is None else all_cond[start : start + shard["images"]]
        tensors = collect_shard(
            model, settings, shard["images"], shard_seed(seed, index), batch_size, bar, cond
        )
        path = out / shard["file"]
        meta = {"format": FORMAT, "fingerprint": manifest["fingerprint"], "steps": str(settings.steps),
                "shard": str(index), "seed": str(seed)}  # fmt: skip
        atomic_save_safetensors(path, tensors, metadata=meta)  # a shard exists only once it is complete
        written.append(path)
    bar.close()
    return written


# --------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--model",
        default="fashion",
        help="base model spec, e.g. fashion, maskgit:config=tiny or dimoo:checkpoint=DIR,prompts=FILE",
    )
    parser.add_argument("--steps", type=int, default=0,
                        help="training N (0 = the model's default; the paper uses 15 for MaskGIT)")  # fmt: skip
    parser.add_argument("--images", type=int, default=1000, help="number of images (trajectories per stream)")
    parser.add_argument("--batch-size", type=int, default=16, help="images sampled together")
    parser.add_argument(
        "--seed", type=int, default=0, help="collection seed (with the shard index, seeds every shard)"
    )
    parser.add_argument("--out", default="", help="output directory (default data/shortcut/<model name>)")
    parser.add_argument(
        "--shard-size", type=int, default=64, help="images per shard file (the unit of resuming)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace, model: BaseModel | None = None) -> int:
    """Entry point of the CLI command (``model`` lets tests pass a model object)."""
    return guarded("shortcut collect", lambda: _run(args, model))


def _run(args: argparse.Namespace, model: BaseModel | None) -> int:
    if model is None:
        from bench.plugins import get_manager

        model = get_manager().make_base_model(args.model, rank_device(args.device))
    rank, world = dist_env()
    out = Path(args.out or Path("data") / "shortcut" / model.name)
    start = time.perf_counter()
    written = collect(model, out, steps=args.steps, images=args.images, batch_size=args.batch_size,
                      seed=args.seed, shard_size=args.shard_size, model_spec=args.model, rank=rank, world=world,
                      show_progress=not args.no_progress)  # fmt: skip
    print(
        f"[rank {rank}/{world}] wrote {len(written)} shard(s) to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def main(argv: list[str] | None = None, model: BaseModel | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m accelerators.shortcut.collect",
                                                   description=__doc__.splitlines()[0]))  # fmt: skip
    return run(parser.parse_args(argv), model)


if __name__ == "__main__":
    sys.exit(main())
