"""Registers the ``dimoo`` base model (code: ``base_models.dimoo.plugin``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import BaseModelSpec


@hookimpl
def register_base_models(register):
    register(
        BaseModelSpec(
            name="dimoo",
            config_cls="base_models.dimoo.plugin:DiMOOPluginConfig",
            factory="base_models.dimoo.plugin:build_dimoo",
            description="Lumina-DiMOO text-to-image from a local checkpoint folder (checkpoint=DIR)",
        )
    )
