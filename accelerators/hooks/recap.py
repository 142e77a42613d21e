"""Registers the ``recap`` accelerator (code: ``accelerators.recap``, imported when used)."""

from bench.hookspecs import hookimpl
from bench.specs import AcceleratorSpec


@hookimpl
def register_accelerators(register):
    register(
        AcceleratorSpec(
            name="recap",
            config_cls="accelerators.recap:ReCAPConfig",
            factory="accelerators.recap:ReCAP",
            description="ReCAP: full steps fix a group of positions, cheap local steps reveal it",
            # two points, mild to aggressive (the default benchmark has a 10-minute budget);
            # the reference's own setting ({}) is one --accel recap away
            default_sweep=(
                {"pre_full_iters": 4, "num_cache_iters": 1},
                {"pre_full_iters": 2, "num_cache_iters": 2},
            ),
        )
    )
