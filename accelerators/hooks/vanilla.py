"""Registers the ``vanilla`` accelerator (code: ``accelerators.vanilla``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "vanilla",
        "accelerators.vanilla",
        "Vanilla",
        "full model every step (the baseline)",
        ({},),
    )
)
