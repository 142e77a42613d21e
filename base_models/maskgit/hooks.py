"""Registers the ``maskgit`` base model (code: ``base_models.maskgit.plugin``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import BaseModelSpec


@hookimpl
def register_base_models(register):
    register(
        BaseModelSpec(
            name="maskgit",
            config_cls="base_models.maskgit.plugin:MaskGITPluginConfig",
            factory="base_models.maskgit.plugin:build_maskgit",
            description="MaskGIT-pytorch v1 (tiny random, public ImageNet checkpoints, or any v1 checkpoint)",
        )
    )
