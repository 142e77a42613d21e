"""``dimoo`` base model plugin: Lumina-DiMOO (Alpha-VLLM/Lumina-DiMOO) from a local checkpoint folder.

Spec: ``dimoo:checkpoint=DIR,resolution=1024,steps=64,cfg=4,temperature=1,prompts=FILE``. The
folder is what the public checkpoint holds (``config.json``, ``model.safetensors`` or
``model.safetensors.index.json`` + shards, ``tokenizer.json``, ``vqvae/``); nothing is downloaded.
Registered by ``base_models.dimoo.hooks``, which names this module's config and factory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from base_models.dimoo.checkpoint import INDEX, SINGLE, load_transformer
from base_models.dimoo.config import read_config
from base_models.dimoo.model import BUILTIN_PROMPTS, DIMOO_SAMPLING, DiMOOModel, read_prompt_file
from base_models.dimoo.text import DiMOOTokenizer, grid_of
from base_models.dimoo.vqvae import WEIGHTS, codebook_size, folder_downsampling_factor, load_vqvae


@dataclass(frozen=True)
class DiMOOPluginConfig:
    """checkpoint: the local Lumina-DiMOO folder (required).
    resolution: image side in pixels, a multiple of the VQ's downsampling factor f (16 for
    Lumina-DiMOO, read from vqvae/config.json; token grid resolution / f square; Lumina-DiMOO's
    default 1024). height / width: a non-square size instead (both, multiples of f; 0 = resolution).
    steps: sampling steps N (the reference's 64); cfg: guidance scale s, (1 + s) cond - s uncond
    on every step (4; 0 = no guidance, one stream); temperature: Gumbel-max sampling and re-masking
    noise temperature (1).
    prompts: a text file, one prompt per line (image i gets prompt i mod their number); empty: a
    small built-in list for smoke runs.
    """

    checkpoint: str = ""
    resolution: int = 1024
    height: int = 0
    width: int = 0
    steps: int = 64
    cfg: float = 4.0
    temperature: float = 1.0
    prompts: str = ""


def image_size(cfg: DiMOOPluginConfig, factor: int = 16) -> tuple[int, int]:
    """(height, width) in pixels from resolution or the height / width pair, multiples of the VQ's
    downsampling ``factor`` (1: only checked positive, before the folder is read)."""
    if bool(cfg.height) != bool(cfg.width):
        raise ValueError("dimoo: give both height and width (or neither: resolution is used)")
    height, width = (cfg.height, cfg.width) if cfg.height else (cfg.resolution, cfg.resolution)
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(
            f"dimoo: image size {height}x{width} must be positive multiples of {factor} (the VQ's downsampling factor)"
        )
    return height, width


def sampling_of(cfg: DiMOOPluginConfig):
    """The spec's sampling settings (validated before any file is read)."""
    if cfg.steps < 1:
        raise ValueError(f"dimoo: steps must be >= 1, got {cfg.steps}")
    if cfg.cfg < 0:
        raise ValueError(f"dimoo: cfg must be >= 0, got {cfg.cfg}")
    if cfg.temperature < 0:
        raise ValueError(f"dimoo: temperature must be >= 0, got {cfg.temperature}")
    return dataclasses.replace(
        DIMOO_SAMPLING, steps=cfg.steps, cfg_weight=float(cfg.cfg), temperature=float(cfg.temperature)
    )


def check_folder(folder: str) -> Path:
    """The checkpoint folder, or a one-line FileNotFoundError naming it and what it lacks."""
    if not folder:
        raise ValueError("dimoo needs a local checkpoint folder: dimoo:checkpoint=DIR (see the README)")
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dimoo: checkpoint folder {path} does not exist")
    missing = [name for name in ("config.json", "tokenizer.json") if not (path / name).is_file()]
    if not (path / SINGLE).is_file() and not (path / INDEX).is_file():
        missing.append(f"{SINGLE} (or {INDEX} + shards)")
    missing += [f"vqvae/{n}" for n in ("config.json", WEIGHTS) if not (path / "vqvae" / n).is_file()]
    if missing:
        raise FileNotFoundError(f"dimoo: checkpoint folder {path} lacks {', '.join(missing)}")
    return path


def builtin_or_file_prompts(cfg: DiMOOPluginConfig) -> tuple[list[str], dict]:
    """The prompts of ``cfg.prompts`` (a file; empty: the built-in list) and their record."""
    prompts = read_prompt_file(cfg.prompts) if cfg.prompts else list(BUILTIN_PROMPTS)
    return prompts, {"source": cfg.prompts or "built-in", "count": len(prompts)}


def build_dimoo(cfg: DiMOOPluginConfig, device: torch.device) -> DiMOOModel:
    """Load the folder onto ``device`` (bfloat16 on a GPU, float32 on the CPU)."""
    return load_dimoo(cfg, device, lambda: builtin_or_file_prompts(cfg))


def load_dimoo(
    cfg: DiMOOPluginConfig,
    device: torch.device,
    prompts: Callable[[], tuple[list[str], dict]],
    name: str = "",
    model_cls: Callable[..., DiMOOModel] = DiMOOModel,
) -> DiMOOModel:
    """``build_dimoo`` for models that bring their own prompts and name (``fashion-t2i``).

    prompts: called after the options are validated, before any checkpoint file is read ->
    (prompts, their run.json record). name: the model's name (empty: ``dimoo-HxW``).
    model_cls: DiMOOModel or a subclass taking its constructor arguments.
    """
    image_size(cfg, factor=1)  # positive sizes, before any file is read
    sampling = sampling_of(cfg)
    prompt_list, record = prompts()
    folder = check_folder(cfg.checkpoint)
    factor = folder_downsampling_factor(folder)  # 16 for Lumina-DiMOO, 4 for the fashion-t2i default
    height, width = image_size(cfg, factor)
    rows, cols = grid_of(height, width, factor)
    tokenizer = DiMOOTokenizer(folder)
    transformer = load_transformer(folder, device, cfg=read_config(folder))
    vqvae = load_vqvae(folder, device, factor=factor)
    model = model_cls(transformer, tokenizer, vqvae, codebook_size(vqvae), rows, cols, prompt_list,
                      name=name or f"dimoo-{height}x{width}", default_sampling=sampling,
                      prompt_record=record)  # fmt: skip
    # refuse too many steps now, not at the first batch
    model.sampler_policy(sampling).schedule(model.num_image_tokens, sampling.steps)
    return model
