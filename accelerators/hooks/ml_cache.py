"""Registers the ``ml-cache`` accelerator (code: ``accelerators.ml_cache``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "ml-cache",
        "accelerators.ml_cache",
        "MLCache",
        "Lumina-DiMOO ML-Cache: recompute only the least confident positions between refreshes",
        # reference, aggressive
        ({}, {"cache_ratio": 0.9, "warmup_ratio": 0.15, "refresh_interval": 8}),
    )
)
