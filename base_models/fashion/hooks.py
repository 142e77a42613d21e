"""Registers the ``fashion`` base model (code: ``base_models.fashion.plugin``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import BaseModelSpec


@hookimpl
def register_base_models(register):
    register(
        BaseModelSpec(
            name="fashion",
            config_cls="base_models.fashion.plugin:FashionConfig",
            factory="base_models.fashion.plugin:load_fashion",
            description="embedded default: MaskGIT v1 (12x128) + VQGAN trained on Fashion-MNIST, shipped",
        )
    )
