"""Lumina-DiMOO (Alpha-VLLM/Lumina-DiMOO): a text-to-image MIGM on LLaDA blocks, loaded from a
local checkpoint folder. The ``dimoo`` base model plugin (``plugin.py``, registered by
``hooks.py``) builds ``model.DiMOOModel`` from the components here."""
