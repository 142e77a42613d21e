"""Registers the ``dllm-cache`` accelerator (code: ``accelerators.dllm_cache``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="dllm-cache",
            config_cls="accelerators.dllm_cache:DLLMCacheConfig",
            factory="accelerators.dllm_cache:DLLMCache",
            description="dLLM-Cache: interval refreshes + V-verify recomputation of the most changed tokens",
            default_sweep=({"gen_interval": 4}, {}),  # mild, reference
        )
    )
