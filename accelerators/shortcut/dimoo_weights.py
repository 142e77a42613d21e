"""DiMOO-Shortcut weight files: safetensors with the network's shape in the metadata.

The reference (Kaiwen-Zhu/MIGM-Shortcut, ``DiMOO-Shortcut/train_shortcut.py`` and
``model/shortcut_model.py``) saves and loads a bare ``state_dict`` with ``torch.save`` /
``torch.load`` and builds the network from command-line flags. Here, as for the MaskGIT
shortcut (``accelerators.shortcut.weights``), the file carries its ``DiMOOShortcutConfig`` and,
when the caller gives one, the base checkpoint's fingerprint; loading checks the keys strictly
(an error names the file and the first missing and unexpected keys) and, when asked, the
fingerprint. Parameter names equal the reference's, so a converted reference state dict loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from accelerators.shortcut.dimoo_model import DiMOOShortcutConfig, DiMOOShortcutNet
from accelerators.shortcut.weights import (
    ShortcutWeightsError,
    load_strict,
    read_metadata,
    read_tensors,
    write_weights,
)

FORMAT = "migm-bench-dimoo-shortcut"
VERSION = "1"


def save_dimoo_shortcut(
    path: str | Path,
    net: DiMOOShortcutNet,
    base_fingerprint: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``net``'s weights (float32) and config; ``base_fingerprint`` names the base checkpoint
    the network was trained on ("" = unbound). Atomic."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "base_fingerprint": base_fingerprint,
        "net_config": net.config.to_json(),
    }
    return write_weights(path, net, meta, extra)


def load_dimoo_shortcut(
    path: str | Path,
    expected_fingerprint: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[DiMOOShortcutNet, dict[str, str]]:
    """The network in ``path`` (eval mode, float32, on ``device``) and the file's metadata.

    The network is built on the meta device and takes the file's tensors as its parameters, so
    an 8B-sized shortcut is never initialised at random first. With ``expected_fingerprint`` the
    file must have been saved for that base checkpoint.
    """
    path = Path(path)
    meta = read_metadata(path, FORMAT)
    bound = meta.get("base_fingerprint", "")
    if expected_fingerprint is not None and bound != expected_fingerprint:
        raise ShortcutWeightsError(
            f"{path} was trained for a base model with fingerprint {bound or '(none)'}, but the one "
            f"in use has fingerprint {expected_fingerprint}"
        )
    try:
        config = DiMOOShortcutConfig.from_json(meta["net_config"])
    except (KeyError, ValueError, TypeError) as err:
        raise ShortcutWeightsError(f"{path}: unreadable net_config metadata: {err}") from err
    with torch.device("meta"):
        net = DiMOOShortcutNet(config)
    load_strict(net, read_tensors(path), path, assign=True)
    return net.to(device).eval(), meta
