"""``fashion-t2i`` base model: the text-to-image default (issue 14), DiMOO on captioned Fashion-MNIST.

Spec: ``fashion-t2i:checkpoint=DIR,clip=DIR,steps=16,cfg=1,temperature=1,prompts=heldout,seed=0``.
The checkpoint is a Lumina-DiMOO folder trained here (``migm-bench train-base vqvae-t2i`` and
``dimoo-t2i``: a small LLaDA model, a VQ of factor 4, 32x32 one-channel images = 8x8 tokens),
loaded by the ``dimoo`` base model's own code (``base_models.dimoo.plugin.load_dimoo``), so the
code path measured is the one users run on the real Lumina-DiMOO. The model declares its
dataset, its default metrics (``default_metrics()``) and its own CLIP for ``clip_score``
(``clip_weights()``: the open_clip CLIP trained on the same captions, ``train-base clip-t2i``).

Prompts are captions of the grammar in ``captions`` (image i gets caption i of a split): the
held-out (class, size, position) combinations on the test images by default; ``train`` is what
learned accelerators collect on (``shortcut collect``), never the evaluation captions. The same
captions are the prompt set ``fashion-t2i:split=heldout,limit=200,seed=0`` of ``--prompts``
(``base_models.fashion_t2i.hooks``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from base_models.dimoo.model import DiMOOModel, read_prompt_file
from base_models.dimoo.plugin import DiMOOPluginConfig, load_dimoo
from base_models.fashion_t2i.captions import SPLITS, make_split
from base_models.fashion_t2i.clip import CONFIG_NAME, WEIGHTS_NAME
from base_models.fashion_t2i.commands import SHIPPED
from bench.config import build_config, parse_spec
from metrics.prompts import prompts_hash

NAME = "fashion-t2i"  # also keys the shortcut's default weights (fashion-t2i_shortcut.safetensors)
DATASET = "fashion-mnist-t2i"
CHECKPOINT = SHIPPED / "dimoo-t2i"
RESOLUTION = 32  # pixels; the VQ's factor 4 gives the 8x8 token grid
MAKE_CHECKPOINT = "`migm-bench train-base vqvae-t2i --ship` then `migm-bench train-base dimoo-t2i --ship`"
# what `migm-bench run --model fashion-t2i` computes without --metrics: CLIPScore with the model's
# own CLIP, attribute accuracy (all four and each) and FID / KID with the attribute classifier
# (base_models.fashion_t2i.t2i_metrics), and the paired fidelity metrics against vanilla
DEFAULT_METRICS = (
    "clip_score",
    "attribute_accuracy",
    "attr_class_accuracy",
    "attr_size_accuracy",
    "attr_position_accuracy",
    "attr_tone_accuracy",
    "fid_attributes",
    "kid_attributes",
    "feature_cosine",
    "psnr_vs_vanilla",
    "ssim_vs_vanilla",
    "token_agreement",
)


@dataclass(frozen=True)
class FashionT2IConfig:
    """checkpoint: the DiMOO checkpoint folder (empty: the shipped ``weights/dimoo-t2i``).
    clip: the folder of clip-t2i.safetensors + clip-t2i.json, the model's CLIP for ``clip_score``
    (empty: the shipped ``weights/``).
    steps: sampling steps N, 16: the reference N of this default (the accelerators' default sweeps
    are written for N = 16). cfg: guidance scale s of DiMOO's (1 + s) cond - s uncond (1: on 50
    held-out captions s = 0 / 1 / 2 gave CLIPScore 74.8 / 78.2 / 66.3 and attribute accuracy
    0.20 / 0.22 / 0.12; `migm-bench run --model fashion-t2i:cfg=S --accel vanilla --images 50`).
    temperature: DiMOO's sampling and re-masking noise temperature (1).
    prompts: ``heldout`` (the held-out caption combinations on the test images: image i gets
    caption i of ``captions.make_split("heldout")``), ``test`` (seen combinations, test images),
    ``train`` (the training captions: what learned accelerators collect on), or a prompt file.
    seed: the caption draw (attributes and phrasing of ``make_split(split, seed)``).
    """

    checkpoint: str = ""
    clip: str = ""
    steps: int = 16
    cfg: float = 1.0
    temperature: float = 1.0
    prompts: str = "heldout"
    seed: int = 0


class FashionT2IModel(DiMOOModel):
    """A DiMOO model trained on captioned Fashion-MNIST: its dataset, default metrics and CLIP."""

    def __init__(self, *args: Any, clip_folder: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = DATASET
        self.clip_folder = clip_folder

    def default_metrics(self) -> list[str]:
        return list(DEFAULT_METRICS)

    def clip_weights(self) -> tuple[str, str]:
        """(open_clip model-config JSON, weights file) of the CLIP trained on the captions."""
        return str(self.clip_folder / CONFIG_NAME), str(self.clip_folder / WEIGHTS_NAME)


def caption_prompts(split: str, seed: int = 0, limit: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Caption i of ``make_split(split, seed)`` for the first ``limit`` images (0: all) and
    their run.json record (split, seed, count)."""
    data = make_split(split, seed)  # the whole split: its draw does not depend on limit
    count = min(limit, len(data)) if limit > 0 else len(data)
    prompts = data.captions(torch.arange(count))
    record = {"source": f"{NAME} captions", "split": split, "seed": seed, "limit": limit or None,
              "count": count, "of": len(data), "prompts_sha256": prompts_hash(prompts)}  # fmt: skip
    return prompts, record


def config_prompts(cfg: FashionT2IConfig) -> tuple[list[str], dict[str, Any]]:
    """The prompts ``cfg.prompts`` names: a caption split, else a prompt file."""
    if cfg.prompts in SPLITS:
        return caption_prompts(cfg.prompts, cfg.seed)
    prompts = read_prompt_file(cfg.prompts)
    return prompts, {"source": cfg.prompts, "count": len(prompts)}


@dataclass(frozen=True)
class PromptSetOptions:
    """The named prompt set ``fashion-t2i:split=heldout,limit=0,seed=0`` (limit 0: the whole split)."""

    split: str = "heldout"
    limit: int = 0
    seed: int = 0


def prompt_set(spec: str) -> tuple[list[str], dict[str, Any]]:
    """(prompts, record) of a ``fashion-t2i:...`` prompt spec; ValueError (one line) when wrong."""
    _, options = parse_spec(spec)
    try:
        chosen = build_config(PromptSetOptions, options, owner=f"prompt set {NAME!r}")
    except KeyError as err:  # an unknown option, with near matches
        raise ValueError(err.args[0]) from None
    if chosen.split not in SPLITS:
        raise ValueError(f"{NAME} prompts: unknown split {chosen.split!r}; choose one of {', '.join(SPLITS)}")
    if chosen.limit < 0:
        raise ValueError(f"{NAME} prompts: limit must be >= 0, got {chosen.limit}")
    prompts, record = caption_prompts(chosen.split, chosen.seed, chosen.limit)
    return prompts, {"spec": spec, **record}


def checkpoint_folder(cfg: FashionT2IConfig) -> Path:
    """The checkpoint folder, or a one-line FileNotFoundError naming the commands that make it."""
    folder = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else CHECKPOINT
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{NAME}: no checkpoint folder {folder}; the shipped one is made by {MAKE_CHECKPOINT}"
        )
    return folder


def build_fashion_t2i(cfg: FashionT2IConfig, device: torch.device) -> FashionT2IModel:
    """The checkpoint through the ``dimoo`` base model's loader, named ``fashion-t2i``, 32x32."""
    folder = checkpoint_folder(cfg)
    dimoo = DiMOOPluginConfig(checkpoint=str(folder), resolution=RESOLUTION, steps=cfg.steps, cfg=cfg.cfg,
                              temperature=cfg.temperature)  # fmt: skip
    clip = Path(cfg.clip).expanduser() if cfg.clip else SHIPPED
    model_cls = functools.partial(FashionT2IModel, clip_folder=clip)
    return load_dimoo(dimoo, device, lambda: config_prompts(cfg), name=NAME, model_cls=model_cls)
