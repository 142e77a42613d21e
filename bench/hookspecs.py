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
