"""Registers the ``taylorseer`` accelerator (code: ``accelerators.taylorseer``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "taylorseer",
        "accelerators.taylorseer",
        "TaylorSeer",
        "TaylorSeer: forecast the blocks' outputs by finite-difference Taylor series",
        # mild, reference
        ({"interval": 3}, {}),
    )
)
