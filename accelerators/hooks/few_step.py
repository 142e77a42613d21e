"""Registers the ``few-step`` accelerator (code: ``accelerators.few_step``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="few-step",
            config_cls="accelerators.few_step:FewStepConfig",
            factory="accelerators.few_step:FewStep",
            description="vanilla with fewer steps",
            default_sweep=({"steps": 8}, {"steps": 6}, {"steps": 4}),
        )
    )
