"""Registers the ``taylorseer`` accelerator (code: ``accelerators.taylorseer``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="taylorseer",
            config_cls="accelerators.taylorseer:TaylorSeerConfig",
            factory="accelerators.taylorseer:TaylorSeer",
            description="TaylorSeer: forecast the blocks' outputs by finite-difference Taylor series",
            default_sweep=({"interval": 3}, {}),  # mild, reference
        )
    )
