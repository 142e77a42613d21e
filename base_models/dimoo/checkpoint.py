"""Strict loading of a Lumina-DiMOO checkpoint folder's transformer weights.

Layout (Hugging Face ``LLaDAModelLM``, base_model_prefix "model"; Alpha-VLLM/Lumina-DiMOO
``model/modeling_llada.py``): ``config.json`` plus either one ``model.safetensors`` or a sharded
``model.safetensors.index.json`` whose ``weight_map`` names a shard per key. Keys:
``model.transformer.wte.weight``, ``model.transformer.blocks.N.{attn_norm, ff_norm, q_proj,
k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out}.weight``, ``model.transformer.ln_f.weight``
and, unless ``weight_tying``, ``model.transformer.ff_out.weight``.

Keys and shapes are checked from the safetensors headers *before* any tensor is read, against a
model built on the meta device; a mismatch is one error naming the file and the first missing,
unexpected or mis-shaped keys. Tensors are then read one by one straight to the target device
and dtype (float32 on CPU, bfloat16 on a GPU), so an 8B model never exists twice in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from base_models.dimoo.config import DiMOOConfig, read_config
from base_models.dimoo.llada import LLaDAModel

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """Weights that do not fit the model they are loaded into."""


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a GPU (as the reference loads it), float32 on the CPU."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def weight_files(folder: str | Path) -> tuple[Path, dict[str, Path]]:
    """The file that describes the weights (single file or index) and key -> shard file."""
    folder = Path(folder)
    single, index = folder / SINGLE, folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from e
        shards = {k: folder / v for k, v in weight_map.items()}
        for shard in sorted(set(shards.values())):
            if not shard.is_file():
                raise CheckpointError(f"{index}: names shard {shard.name}, which is not in {folder}")
        return index, shards
    if single.is_file():
        return single, {k: single for k in _header_shapes(single)}
    raise FileNotFoundError(f"{folder}: no {SINGLE} or {INDEX} in the checkpoint folder")


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # truncated or foreign file
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e


def check_keys(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], source: Path | str) -> None:
    """Require the checkpoint's key set and shapes to equal the model's (one-line error otherwise)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    if missing := expected.keys() - shapes.keys():
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected := shapes.keys() - expected.keys():
        problems.append(f"unexpected keys: {_first(unexpected)}")
    wrong = [
        f"{k} {shapes[k]} != expected {v}"
        for k, v in sorted(expected.items())
        if k in shapes and shapes[k] != v
    ]
    if wrong:
        problems.append(
            "shape mismatches: "
            + "; ".join(wrong[:3])
            + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
        )
    if problems:
        raise CheckpointError(
            f"{source}: does not fit the LLaDA transformer of config.json: " + "; ".join(problems)
        )


def load_transformer(
    folder: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cfg: DiMOOConfig | None = None,
) -> LLaDAModel:
    """config.json + safetensors of ``folder`` -> LLaDAModel in eval mode on ``device``."""
    folder = Path(folder)
    cfg = cfg or read_config(folder)
    dtype = dtype or default_dtype(device)
    source, shards = weight_files(folder)
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(shards.values())):
        for k, shape in _header_shapes(shard).items():
            if shards.get(k) == shard:  # the index decides which shard owns a key
                shapes[k] = shape
    listed_absent = [k for k, shard in shards.items() if k not in shapes]
    if listed_absent:
        raise CheckpointError(f"{source}: keys listed but absent from their shard: {_first(listed_absent)}")
    with torch.device("meta"):
        model = LLaDAModel(cfg)
    check_keys(model, shapes, source)
    state = {}
    for shard in sorted(set(shards.values())):
        with safe_open(str(shard), "pt", device="cpu") as f:
            for k in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if shards.get(k) == shard:
                    state[k] = f.get_tensor(k).to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
