"""Registers the ``fashion-t2i`` base model and its caption prompt set (code:
``base_models.fashion_t2i.plugin``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import BaseModelSpec

PROMPT_SET = "fashion-t2i"


@hookimpl
def register_base_models(register):
    register(
        BaseModelSpec(
            name="fashion-t2i",
            config_cls="base_models.fashion_t2i.plugin:FashionT2IConfig",
            factory="base_models.fashion_t2i.plugin:build_fashion_t2i",
            description="text-to-image default: a small DiMOO trained on captioned Fashion-MNIST, shipped",
            # its forward (CFG, ~110-token sequences) costs ~3x the class-conditional default's
            # (590 against 194 ms per image at one thread): 80 images keep the 10-minute budget
            default_run={"images": 80, "batch_size": 8, "replicates": 10},
            # the shortcut variant trained only for this model: a quarter of the base width, its
            # call within the 1/20-of-a-forward budget that the reference's half width misses here
            extra_sweep=("shortcut:steps=16,budget=6,variant=narrow",),
        )
    )


@hookimpl
def resolve_prompts(spec):
    """``fashion-t2i:split=heldout,limit=200,seed=0``: the captions of a split (asked before the
    catch-all of ``metrics.plugin``); None for any other spec."""
    if spec.partition(":")[0].strip() != PROMPT_SET:
        return None
    from base_models.fashion_t2i.plugin import prompt_set

    return prompt_set(spec)
