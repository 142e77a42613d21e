"""Registers the ``vanilla`` accelerator (code: ``accelerators.vanilla``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="vanilla",
            config_cls="accelerators.vanilla:VanillaConfig",
            factory="accelerators.vanilla:Vanilla",
            description="full model every step (the baseline)",
            default_sweep=({},),
        )
    )
