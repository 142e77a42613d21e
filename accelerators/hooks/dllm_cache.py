"""Registers the ``dllm-cache`` accelerator (code: ``accelerators.dllm_cache``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "dllm-cache",
        "accelerators.dllm_cache",
        "DLLMCache",
        "dLLM-Cache: interval refreshes + V-verify recomputation of the most changed tokens",
        # mild, reference
        ({"gen_interval": 4}, {}),
    )
)
