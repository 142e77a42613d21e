"""The built-in accelerators as the plugin manager sees them: one small module per accelerator
whose ``register_accelerators`` hook gives the name, description and default sweep, and names
the code lazily (``"accelerators.ml_cache:MLCache"``, ``bench.lazy``). Registering them imports
no torch; the accelerator's own module is imported when it is built or its config is read.
"""
