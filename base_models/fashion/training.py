"""What the embedded default's three trainers share beyond ``bench.training``: shipping.

Checkpoints in progress (``bench.training``: model, optimizer, schedule, random generator,
step) live outside git; the shipped artefact is a safetensors file whose metadata carries
the model configuration, a hash of the training data and the training settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from bench.integrity import record
from bench.results import atomic_save_safetensors


def ship_weights(path: Path, module: nn.Module, metadata: dict[str, Any]) -> None:
    """Save ``module``'s weights as safetensors with JSON-encoded ``metadata`` values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    atomic_save_safetensors(path, tensors, metadata=meta)
    record(path)  # a shipped file: keep its folder's INTEGRITY.json in step
