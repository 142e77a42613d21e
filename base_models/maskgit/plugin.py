"""``maskgit`` base model plugin: MaskGIT-pytorch v1 checkpoints from local files, or a tiny
random model.

``config`` picks the shapes: ``tiny`` (random weights from ``seed``, or the given files
loaded strictly into the tiny shapes), ``imagenet256`` / ``imagenet512`` (the public
checkpoints' shapes), ``auto`` (shapes read from the checkpoint file itself). A given
checkpoint or VQGAN file is always loaded, or refused with an error; it is never ignored.
Registered by ``base_models.maskgit.hooks``, which names this module's config and factory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from base_models.maskgit.checkpoint import (
    DEFAULT_HEADS,
    IMAGENET_256,
    IMAGENET_512,
    IMAGENET_VQGAN,
    config_from_state,
    load_strict,
    load_transformer_safetensors,
    load_vqgan_ckpt,
    load_vqgan_safetensors,
    read_maskgit_state,
)
from base_models.maskgit.model import MaskGITModel
from base_models.maskgit.testing import TINY_SAMPLING, TINY_TRANSFORMER, TINY_VQGAN, tiny_maskgit
from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
from base_models.maskgit.vqgan import VQModel
from bench.config import UnknownNameError, suggest
from bench.protocol import SamplingSettings
from bench.sampling_options import apply_sampling_options

CONFIGS = {"imagenet256": IMAGENET_256, "imagenet512": IMAGENET_512}
KNOWN = ("tiny", *CONFIGS, "auto")
# MIGM-Shortcut's MaskGIT sampling (Kaiwen-Zhu/MIGM-Shortcut, MaskGIT-Shortcut/main.py: --step 15,
# --sched_mode arccos, --cfg_w 2.8, --r_temp 7, --sm_temp 1; Trainer/vit.py sample(): linear
# guidance ramp w * i / (N - 1), Gumbel noise decayed linearly, "randomize" = linear).
IMAGENET_SAMPLING = SamplingSettings(steps=15, cfg_weight=2.8, cfg_schedule="linear", mask_schedule="arccos",
                                     temperature=1.0, gumbel_temperature=7.0, reveal_policy="confidence")  # fmt: skip


@dataclass(frozen=True)
class MaskGITPluginConfig:
    """config: "tiny" (random weights from ``seed``, or ``checkpoint`` / ``vqgan`` loaded into
    the tiny shapes), "imagenet256" / "imagenet512" (the public MaskGIT-pytorch checkpoints'
    shapes), "auto" (any v1 checkpoint: depth, width, MLP width, grid and vocabulary read from
    the file; a shipped ``.safetensors`` carries its whole configuration).
    checkpoint: the transformer file (MaskGIT_ImageNet_256.pth, or a ``.safetensors`` written
    by this project). vqgan: the VQGAN ``last.ckpt`` (or ``.safetensors``); optional, without
    it the model samples tokens but cannot decode images.
    heads: attention heads for ``auto`` (not recorded in the weights; MaskGIT-pytorch: 16).
    codebook / classes: split of the vocabulary for ``auto`` (one is enough; the VQGAN's
    codebook is used when a vqgan file is given).
    seed: weights seed of the random tiny model.
    Sampling (``bench.sampling_options``; unset = the config's default: MIGM-Shortcut's
    N = 15, CFG 2.8, Gumbel temperature 7 for imagenet / auto): steps (0 = keep), cfg_weight
    (negative = keep), cfg_schedule, mask_schedule, temperature, gumbel_temperature,
    reveal_policy.
    """

    config: str = "tiny"
    checkpoint: str = ""
    vqgan: str = ""
    heads: int = 0
    codebook: int = 0
    classes: int = 0
    seed: int = 0
    steps: int = 0
    cfg_weight: float = -1.0
    cfg_schedule: str | None = None
    mask_schedule: str | None = None
    temperature: float | None = None
    gumbel_temperature: float | None = None
    reveal_policy: str | None = None


def _load_transformer(path: str, cfg: TransformerConfig) -> MaskTransformer:
    if Path(path).suffix == ".safetensors":
        model = load_transformer_safetensors(path)
        if model.cfg != cfg:
            raise ValueError(f"{path}: holds a {model.cfg} transformer, not the requested {cfg}")
        return model
    model = MaskTransformer(cfg)
    load_strict(model, read_maskgit_state(path), path)
    return model


def _load_vqgan(path: str, cfg) -> VQModel:
    if Path(path).suffix == ".safetensors":
        return load_vqgan_safetensors(path)
    return load_vqgan_ckpt(path, cfg)


def _auto_transformer(cfg: MaskGITPluginConfig, vqgan: VQModel | None) -> MaskTransformer:
    if Path(cfg.checkpoint).suffix == ".safetensors":
        if cfg.heads or cfg.codebook or cfg.classes:
            raise ValueError(
                "maskgit:config=auto: a .safetensors file carries its own heads/codebook/classes"
            )
        return load_transformer_safetensors(cfg.checkpoint)
    state = read_maskgit_state(cfg.checkpoint)
    codebook = cfg.codebook
    if vqgan is not None:
        n_embed = vqgan.quantize.embedding.weight.shape[0]
        if codebook and codebook != n_embed:
            raise ValueError(f"maskgit: codebook={codebook} but the VQGAN {cfg.vqgan} has {n_embed} codes")
        codebook = n_embed
    shape = config_from_state(state, cfg.checkpoint, cfg.heads or DEFAULT_HEADS, codebook, cfg.classes)
    model = MaskTransformer(shape)
    load_strict(model, state, cfg.checkpoint)
    return model


def build_maskgit(cfg: MaskGITPluginConfig, device: torch.device) -> MaskGITModel:
    if cfg.config not in KNOWN:
        raise UnknownNameError(f"unknown maskgit config {cfg.config!r}.{suggest(cfg.config, KNOWN)}")
    if cfg.config != "auto" and (cfg.heads or cfg.codebook or cfg.classes):
        raise ValueError(f"maskgit:config={cfg.config}: heads/codebook/classes apply to config=auto only")
    if cfg.seed and (cfg.config != "tiny" or cfg.checkpoint):
        raise ValueError(
            "maskgit: seed applies to the random tiny model only, not to weights loaded from a file"
        )
    base_sampling = TINY_SAMPLING if cfg.config == "tiny" else IMAGENET_SAMPLING
    sampling = apply_sampling_options(base_sampling, cfg, owner="maskgit")  # bad options fail before loading
    if cfg.config == "tiny":
        if not cfg.checkpoint and not cfg.vqgan:
            model = tiny_maskgit(cfg.seed)
        else:
            random = tiny_maskgit(cfg.seed)
            transformer = (
                _load_transformer(cfg.checkpoint, TINY_TRANSFORMER) if cfg.checkpoint else random.transformer
            )
            vq_cfg = dataclasses.replace(TINY_VQGAN, n_embed=TINY_TRANSFORMER.codebook_size)
            vqgan = _load_vqgan(cfg.vqgan, vq_cfg) if cfg.vqgan else random.vqgan
            model = MaskGITModel(transformer, vqgan, name="maskgit-tiny")
    else:
        if not cfg.checkpoint:
            raise ValueError(
                f"maskgit:config={cfg.config} needs a local checkpoint: "
                f"maskgit:config={cfg.config},checkpoint=PATH/MaskGIT_ImageNet_256.pth[,vqgan=PATH/last.ckpt]"
            )
        vqgan = _load_vqgan(cfg.vqgan, IMAGENET_VQGAN) if cfg.vqgan else None
        if cfg.config == "auto":
            transformer = _auto_transformer(cfg, vqgan)
        else:
            transformer = _load_transformer(cfg.checkpoint, CONFIGS[cfg.config])
        dataset = "imagenet" if cfg.config in CONFIGS else None  # "auto": any v1 checkpoint, data unknown
        model = MaskGITModel(transformer, vqgan, name=f"maskgit-{cfg.config}", dataset=dataset)
    model.default_sampling = sampling
    return model.to(device)
