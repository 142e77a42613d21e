"""Lumina-DiMOO (Alpha-VLLM/Lumina-DiMOO): a text-to-image MIGM on LLaDA blocks, loaded from a
local checkpoint folder. Components only; the plugin arrives with the generalised block protocol."""
