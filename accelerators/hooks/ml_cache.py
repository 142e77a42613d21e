"""Registers the ``ml-cache`` accelerator (code: ``accelerators.ml_cache``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="ml-cache",
            config_cls="accelerators.ml_cache:MLCacheConfig",
            factory="accelerators.ml_cache:MLCache",
            description="Lumina-DiMOO ML-Cache: recompute only the least confident positions between refreshes",
            default_sweep=(  # reference, aggressive
                {},
                {"cache_ratio": 0.9, "warmup_ratio": 0.15, "refresh_interval": 8},
            ),
        )
    )
