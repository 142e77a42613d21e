"""MIGM-Shortcut (Zhu et al., arXiv 2602.23996; Kaiwen-Zhu/MIGM-Shortcut): a small learned
network predicts the next step's last-layer features from the previous ones and the tokens
just revealed, so that only B of the N sampling steps run the base model.

Modules: ``model`` (the network), ``schedule`` (which steps are full), ``weights`` (files
bound to a base model's fingerprint), ``data`` (trajectory files and training pairs),
``collect`` / ``train`` (the ``migm-bench shortcut collect|train`` commands, also runnable
as ``python -m`` / ``torchrun -m``), ``accelerator`` (inference and the plugin hooks; this
is the module to register as a plugin); ``dimoo_model`` / ``dimoo_weights`` (the DiMOO-Shortcut
network for Lumina-DiMOO and its weight files), ``dimoo_inputs`` (its step inputs and training
pairs from the sequence layout), ``networks`` (which family a weights file or a base model
takes), ``cost`` / ``dimoo_cost`` (per-call cost; the 8B real-shape fraction).
"""
