"""The standard Inception-v3 feature network, for FID of real-image (ImageNet-scale) models.

``inception_v3_extractor(weights_path)``: the torch-fidelity port of the TF 2015-12-05 graph
from a *local* weights file (nothing is downloaded at run time); ``load_reference_images``:
the real images of an FID reference batch (ADM's ``.npz`` layout).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity v0.2.0 release asset


class _InceptionFromUnitFloat(nn.Module):
    """float (n, C, H, W) in [0, 1] -> uint8 [0, 255] RGB -> Inception-v3 features (n, d)."""

    def __init__(self, inception: nn.Module, feature: int) -> None:
        super().__init__()
        self.inception = inception
        self.num_features = feature

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB
        if x.is_floating_point():
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(x).reshape(len(x), -1)


def inception_v3_extractor(weights_path: str | os.PathLike | None, feature: int = 2048) -> nn.Module:
    """Inception-v3 feature extractor (torchmetrics ``NoTrainInceptionV3``, the torch-fidelity
    port of the TF graph used by the original FID code) built from a LOCAL weights file
    (``weights-inception-2015-12-05-6726825d.pth`` of torch-fidelity's v0.2.0 release).

    Takes float images in [0, 1] (grayscale is repeated to RGB); returns (n, feature).
    Raises FileNotFoundError naming the path when the weights are missing, and
    ModuleNotFoundError when torch-fidelity is not installed.
    """
    if feature not in (64, 192, 768, 2048):
        raise ValueError(f"Inception feature layer must be one of 64, 192, 768, 2048, got {feature}")
    if weights_path is None:
        raise FileNotFoundError(
            f"no Inception-v3 weights path given: download {INCEPTION_WEIGHTS_FILE} "
            "(torch-fidelity v0.2.0 release) on a machine with internet and pass its local path"
        )
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception-v3 weights not found: {path} (expected torch-fidelity's {INCEPTION_WEIGHTS_FILE}; "
            "nothing is downloaded at run time)"
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError(
            "Inception-v3 FID/KID needs torch-fidelity: `pip install torch-fidelity`"
        ) from e
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=str(path)
        )
    except Exception as e:
        raise RuntimeError(f"could not load Inception-v3 weights from {path}: {e}") from e
    return _InceptionFromUnitFloat(net, feature)


def load_reference_images(path: str | os.PathLike) -> Tensor:
    """Real images of an FID reference batch (the ``arr_0`` layout of ADM/guided-diffusion's
    ``VIRTUAL_imagenet256_labeled.npz``): uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID reference images not found: {path}")
    with np.load(path) as data:
        if "arr_0" not in data:
            raise ValueError(f"{path}: no 'arr_0' array of images (keys: {', '.join(data.files)})")
        arr = data["arr_0"]
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: 'arr_0' must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)
