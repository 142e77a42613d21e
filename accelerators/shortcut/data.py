"""Trajectory files of the base model and the training pairs built from them.

Layout of a collection directory (written by ``accelerators.shortcut.collect``)::

    manifest.json                 base model name + fingerprint, N, sampling settings,
                                  seed, shard plan (file name and image count per shard)
    shard-00000.safetensors       per image: features of every step for each CFG stream
    shard-00001.safetensors       (float16), reveal step of every token, final tokens, condition
    ...

Shard tensors (n images, N steps, L positions, D features, P image tokens):
    features_cond (n, N, L, D) float16: last-layer features step i produced, conditional stream
    features_uncond (n, N, L, D) float16: the same for the unconditional stream (CFG only)
    reveal_step (n, P) int64: the step at which each image token was revealed
    tokens (n, P) int64: final tokens; cond (n,) int64: the condition (class label)

float16 halves the disk and memory footprint; the features are O(1) after the base model's
final LayerNorm, well inside float16 range, and the reference also records them under
autocast (half precision). Training converts them back to float32.

Training pairs follow the reference (Kaiwen-Zhu/MIGM-Shortcut, ``MaskGIT-Shortcut/
shortcut_utils.py`` ``get_samples_factory`` and ``train_shortcut.py`` ``run_step``): for
step i in [0, N-2], input features f_i, the tokens with reveal_step == i (ids from the final
tokens), the mask ratio after step i's reveal, target f_{i+1}; the loss covers the image
positions still masked after step i. Both CFG streams are samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from bench.config import UnknownNameError
from bench.protocol import BaseModel, condition_prompts
from bench.results import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "migm-bench-shortcut-trajectories"
STREAM_KEYS = ("features_cond", "features_uncond")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def shard_plan(images: int, shard_size: int) -> list[int]:
    """Image count of every shard: ``images`` split into shards of ``shard_size`` (last one shorter)."""
    if images < 1 or shard_size < 1:
        raise ValueError(f"need images >= 1 and shard size >= 1, got {images} and {shard_size}")
    return [min(shard_size, images - start) for start in range(0, images, shard_size)]


def shard_seed(seed: int, index: int) -> int:
    """A seed for shard ``index`` that depends only on (seed, index), never on the number of
    processes: the same collection is produced by 1 or W ranks, and resumes identically."""
    digest = hashlib.sha256(f"migm-shortcut:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def dist_env() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment (RANK / WORLD_SIZE), else (0, 1)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return rank, world


def rank_device(device: str) -> str:
    """The device of this process: ``cuda`` under torchrun is the rank's own GPU (LOCAL_RANK), as the
    reference's ``torch.cuda.set_device(local_rank)``; anything else as given."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a CLI command body: user errors (bad files, options or names: ValueError, OSError,
    UnknownNameError) print one line to stderr and give exit status 2 instead of a traceback."""
    try:
        return body()
    except (ValueError, OSError, UnknownNameError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no trajectory manifest at {path}; create the data with `migm-bench shortcut collect --out {root}`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a shortcut trajectory manifest (format={manifest.get('format')!r})")
    return manifest


def collection_conditions(model: BaseModel, images: int, seed: int) -> torch.Tensor | None:
    """The conditions of all ``images`` of a text-to-image collection (image j: the model's condition
    j), None for a class-conditional model (each shard then draws its own)."""
    if getattr(model, "condition_prompts", None) is None:
        return None
    return model.conditions(images, torch.Generator().manual_seed(seed)).cpu().long()


def prompts_sha256(model: BaseModel, cond: torch.Tensor | None) -> str | None:
    """sha256 of the prompts of ``cond`` in order (None without prompts): binds a collection to the
    prompt file it was generated from."""
    prompts = None if cond is None else condition_prompts(model, cond)
    return None if prompts is None else hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


# ------------------------------------------------------------------------ trajectories
@dataclass
class Trajectories:
    """Trajectories of n images held in memory.

    features: (n, S, N, L, D) float16 (S = 1 or 2 CFG streams), in memory or left in the shard
    files (``ShardFeatures``); reveal_step, tokens: (n, P); cond: (n,) the condition of every
    image (None when not loaded)."""

    features: Tensor | ShardFeatures
    reveal_step: Tensor
    tokens: Tensor
    cond: Tensor | None = None

    @property
    def num_images(self) -> int:
        return self.features.shape[0]

    @property
    def streams(self) -> int:
        return self.features.shape[1]

    @property
    def steps(self) -> int:
        return self.features.shape[2]


def available_shards(root: str | Path, manifest: dict[str, Any]) -> list[tuple[int, str, int]]:
    """(index, file, images) of the planned shards that exist (finished) under ``root``."""
    root = Path(root)
    return [
        (i, s["file"], s["images"]) for i, s in enumerate(manifest["shards"]) if (root / s["file"]).is_file()
    ]


class ShardFeatures:
    """Trajectory features left in their shard files and read per pair (``safe_open`` slices, so
    only the rows asked for leave the disk): Lumina-DiMOO's are ~4.4 GB per image (2 streams x 64
    steps x ~4200 rows x 4096 features in float16), far more than memory holds for a training set.
    Indexed like the in-memory (n, S, N, L, D) tensor: ``features[image, stream, step]`` with (B,)
    long indices -> (B, L, D) float16.

    root: the collection directory; rows: (shard file, index in the shard) of each image; streams:
    the shard keys of the S streams; shape: (n, S, N, L, D)."""

    def __init__(self, root: Path, rows: list[tuple[str, int]], streams: tuple[str, ...],
                 shape: tuple[int, ...]) -> None:  # fmt: skip
        self.root, self.rows, self.streams, self.shape = root, rows, streams, shape
        self._open: dict[str, Any] = {}  # shard file -> safe_open handle, opened once

    def _slice(self, file: str, key: str) -> Any:
        if file not in self._open:
            self._open[file] = safe_open(str(self.root / file), framework="pt")
        return self._open[file].get_slice(key)

    def __getitem__(self, index: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        image, stream, step = (torch.as_tensor(i).reshape(-1).tolist() for i in index)
        rows = [self.rows[i] for i in image]
        return torch.stack([self._slice(file, self.streams[s])[local, t]
                            for (file, local), s, t in zip(rows, stream, step, strict=True)])  # fmt: skip


def load_images(
    root: str | Path, manifest: dict[str, Any], wanted: list[int], lazy: bool = False
) -> Trajectories:
    """Load images with global indices ``wanted`` (numbered over the available shards in
    order), reading only the shards that hold them; ``lazy``: leave the features in the files
    (``ShardFeatures``), load the rest."""
    root = Path(root)
    streams = STREAM_KEYS[: manifest["streams"]]
    by_shard: dict[str, list[int]] = {}
    start = 0
    wanted_set = set(wanted)
    for _, file, count in available_shards(root, manifest):
        local = [j - start for j in range(start, start + count) if j in wanted_set]
        if local:
            by_shard[file] = local
        start += count
    parts: dict[str, list[Tensor]] = {"features": [], "reveal_step": [], "tokens": [], "cond": []}
    rows: list[tuple[str, int]] = []  # lazy: where each image's features are
    shape: tuple[int, ...] = ()
    for file, local in by_shard.items():
        idx = torch.tensor(local)
        with safe_open(str(root / file), framework="pt") as f:
            if lazy:
                rows += [(file, i) for i in local]
                shape = tuple(f.get_slice(streams[0]).get_shape()[1:])  # (N, L, D)
            else:
                feats = [f.get_tensor(key)[idx] for key in streams]  # (k, N, L, D) each
                parts["features"].append(torch.stack(feats, dim=1))  # (k, S, N, L, D)
            parts["reveal_step"].append(f.get_tensor("reveal_step")[idx])
            parts["tokens"].append(f.get_tensor("tokens")[idx])
            parts["cond"].append(f.get_tensor("cond")[idx])
    if not by_shard:
        raise ValueError(f"{root}: none of the requested images are in the finished shards")
    if lazy:
        features = ShardFeatures(root, rows, streams, (len(rows), len(streams), *shape))
        return Trajectories(features, *(torch.cat(parts[k]) for k in ("reveal_step", "tokens", "cond")))
    return Trajectories(*(torch.cat(parts[k]) for k in ("features", "reveal_step", "tokens", "cond")))


def split_images(total: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train, validation) image indices: the last ceil(fraction * total) images are held out
    (they come from the last shards, i.e. from seeds training never sees)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must lie in [0, 1), got {val_fraction}")
    n_val = min(total - 1, math.ceil(val_fraction * total)) if val_fraction > 0 else 0
    return list(range(total - n_val)), list(range(total - n_val, total))


# ------------------------------------------------------------------------------ pairs
@dataclass
class PairBatch:
    """A batch of (f_i, new tokens, t, f_{i+1}) training pairs.

    prev, target: (B, L, D) float32; new_ids, new_positions: (B, K) with new_valid (B, K)
    False on padding; mask_ratio: (B,); loss_mask: (B, L) bool, True on the image positions
    still masked after the step (condition positions never count)."""

    prev: Tensor
    target: Tensor
    new_ids: Tensor
    new_positions: Tensor
    new_valid: Tensor
    mask_ratio: Tensor
    loss_mask: Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(getattr(self, k).to(device) for k in self.__dataclass_fields__))


def make_pairs(data: Trajectories, image: Tensor, stream: Tensor, step: Tensor) -> PairBatch:
    """Pairs for (image, stream, step) index triples, each (B,) long, step in [0, N-2]."""
    prev = data.features[image, stream, step].float()  # (B, L, D)
    target = data.features[image, stream, step + 1].float()
    reveal = data.reveal_step[image]  # (B, P)
    tokens = data.tokens[image]
    is_new = reveal == step[:, None]  # (B, P): revealed by this step
    counts = is_new.sum(dim=1)
    k = int(counts.max())
    # new positions first (stable order), padded to the largest count in the batch
    order = torch.sort((~is_new).to(torch.int8), dim=1, stable=True).indices[:, :k]  # (B, K)
    valid = torch.arange(k)[None] < counts[:, None]
    still_masked = reveal > step[:, None]  # (B, P)
    P, L = reveal.shape[1], prev.shape[1]
    loss_mask = torch.cat([still_masked, still_masked.new_zeros(len(image), L - P)], dim=1)
    return PairBatch(
        prev=prev,
        target=target,
        new_ids=torch.gather(tokens, 1, order),
        new_positions=order,
        new_valid=valid,
        mask_ratio=still_masked.float().mean(dim=1),
        loss_mask=loss_mask,
    )


def all_pair_indices(num_images: int, streams: int, steps: int) -> Tensor:
    """Every (image, stream, step) triple of a set, as (M, 3) long (for validation)."""
    grid = torch.cartesian_prod(torch.arange(num_images), torch.arange(streams), torch.arange(steps - 1))
    return grid.view(-1, 3)


def random_pair_indices(
    data: Trajectories, batch: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``batch`` uniform (image, stream, step) triples drawn from ``generator``."""
    image = torch.randint(0, data.num_images, (batch,), generator=generator)
    stream = torch.randint(0, data.streams, (batch,), generator=generator)
    step = torch.randint(0, data.steps - 1, (batch,), generator=generator)
    return image, stream, step
