"""Registers the ``recap`` accelerator (code: ``accelerators.recap``, imported when used)."""

from accelerators.hooks import lazy_accelerator, registering

register_accelerators = registering(
    lazy_accelerator(
        "recap",
        "accelerators.recap",
        "ReCAP",
        "ReCAP: full steps fix a group of positions, cheap local steps reveal it",
        # two points, mild to aggressive (the default benchmark has a 10-minute budget);
        # the reference's own setting ({}) is one --accel recap away
        ({"pre_full_iters": 4, "num_cache_iters": 1}, {"pre_full_iters": 2, "num_cache_iters": 2}),
    )
)
