"""``maskgit`` base model plugin: public MaskGIT-pytorch checkpoints or a tiny random model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from base_models.maskgit.checkpoint import IMAGENET_256, IMAGENET_512, load_maskgit_pth, load_vqgan_ckpt
from base_models.maskgit.model import MaskGITModel
from base_models.maskgit.testing import tiny_maskgit
from bench.config import UnknownNameError, suggest
from bench.hookspecs import hookimpl
from bench.protocol import SamplingSettings
from bench.specs import BaseModelSpec

CONFIGS = {"imagenet256": IMAGENET_256, "imagenet512": IMAGENET_512}


@dataclass(frozen=True)
class MaskGITPluginConfig:
    """config: "tiny" (random weights, for tests and smoke runs), "imagenet256" or
    "imagenet512" (public MaskGIT-pytorch checkpoints; need ``checkpoint`` and ``vqgan``).
    checkpoint: path to MaskGIT_ImageNet_256.pth / _512.pth. vqgan: path to the VQGAN last.ckpt.
    seed: weights seed of the tiny model. steps: default N (0 = the model's own default).
    """

    config: str = "tiny"
    checkpoint: str = ""
    vqgan: str = ""
    seed: int = 0
    steps: int = 0


def build_maskgit(cfg: MaskGITPluginConfig, device: torch.device) -> MaskGITModel:
    if cfg.config == "tiny":
        model = tiny_maskgit(cfg.seed)
    elif cfg.config in CONFIGS:
        if not cfg.checkpoint or not cfg.vqgan:
            raise ValueError(
                f"maskgit:config={cfg.config} needs local weights: "
                "maskgit:config=imagenet256,checkpoint=PATH/MaskGIT_ImageNet_256.pth,vqgan=PATH/last.ckpt"
            )
        transformer = load_maskgit_pth(cfg.checkpoint, CONFIGS[cfg.config])
        model = MaskGITModel(transformer, load_vqgan_ckpt(cfg.vqgan), name=f"maskgit-{cfg.config}",
                             default_sampling=SamplingSettings())  # fmt: skip
    else:
        raise UnknownNameError(f"unknown maskgit config {cfg.config!r}.{suggest(cfg.config, ['tiny', *CONFIGS])}")
    if cfg.steps:
        import dataclasses

        model.default_sampling = dataclasses.replace(model.default_sampling, steps=cfg.steps)
    return model.to(device)


@hookimpl
def register_base_models(register):
    register(
        BaseModelSpec(
            name="maskgit",
            config_cls=MaskGITPluginConfig,
            factory=build_maskgit,
            description="MaskGIT-pytorch v1 (tiny random, or public ImageNet checkpoints from local paths)",
        )
    )
