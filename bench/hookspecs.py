"""pluggy hook specifications of migm-bench (entry-point group ``migm_bench``)."""

from __future__ import annotations

import pluggy

PROJECT = "migm_bench"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_base_models(register):
    """Call ``register(BaseModelSpec(...))`` once per base model the plugin provides."""


@hookspec
def register_accelerators(register):
    """Call ``register(AcceleratorSpec(...))`` once per accelerator the plugin provides."""


@hookspec
def register_metrics(register):
    """Call ``register(MetricSpec(...))`` once per metric the plugin provides."""


@hookspec
def register_commands(subparsers):
    """Add CLI sub-commands (argparse sub-parsers), e.g. ``shortcut collect``.

    Each sub-parser sets ``func=callable(args) -> int``.
    """


@hookspec(firstresult=True)
def resolve_prompts(spec):
    """The prompts of a prompt spec (``migm-bench run --prompts SPEC``): a named set with its
    selection, e.g. ``parti:category=Animals,limit=200``, or a prompt file path.

    Return ``(prompts: list[str], record: dict)`` (the selected prompts in order, and a
    JSON-able record of what was selected for run.json), or None for a spec the plugin does
    not own; raise ValueError with a one-line message for one it owns but cannot resolve. The
    first non-None answer wins (pluggy calls the last registered plugin first); the shipped
    sets and prompt files (``metrics.plugin``) answer last, as the catch-all."""
