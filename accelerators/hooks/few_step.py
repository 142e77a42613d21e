"""Registers the ``few-step`` accelerator (code: ``accelerators.few_step``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "few-step",
        "accelerators.few_step",
        "FewStep",
        "vanilla with fewer steps",
        ({"steps": 8}, {"steps": 6}, {"steps": 4}),
    )
)
