"""The built-in accelerators as the plugin manager sees them: one small module per accelerator
whose ``register_accelerators`` hook gives the name, description and default sweep, and names
the code lazily (``"accelerators.ml_cache:MLCache"``, ``bench.lazy``). Registering them imports
no torch; the accelerator's own module is imported when it is built or its config is read.
"""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


def lazy_accelerator(
    name: str, module: str, cls: str, description: str, default_sweep: tuple[dict, ...]
) -> AcceleratorSpec:
    """The spec of accelerator ``name`` whose code is ``module:cls`` and config ``module:clsConfig``."""
    return AcceleratorSpec(
        name=name,
        config_cls=f"{module}:{cls}Config",
        factory=f"{module}:{cls}",
        description=description,
        default_sweep=default_sweep,
    )


def registering(*specs: AcceleratorSpec):
    """A ``register_accelerators`` hook implementation that registers ``specs``."""

    @hookimpl
    def register_accelerators(register):
        for spec in specs:
            register(spec)

    return register_accelerators
