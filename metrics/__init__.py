"""Text-to-image quality metrics from local weights (CLIPScore with open_clip, ImageReward) and
prompt sets (PartiPrompts, GenEval, user files). The plugin is ``metrics.plugin``."""
