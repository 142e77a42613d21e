"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (idx .gz files).

Images are 28x28 uint8; the embedded default model works on 32x32 (zero-padded by 2
pixels on each side) so that a factor-4 tokenizer gives an 8x8 token grid.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import torch
from torch import Tensor

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "MIGM_FASHION_MNIST"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetMissing(FileNotFoundError):
    """The Fashion-MNIST files are not where we looked."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the idx files: ``root``, else $MIGM_FASHION_MNIST, else Debian's."""
    return Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def _read_idx(path: Path) -> Tensor:
    with gzip.open(path, "rb") as f:
        data = f.read()
    (magic,) = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8)
    return arr.view(*dims).clone()


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """-> images uint8 (n, 28, 28), labels long (n,). Clear error if the files are missing."""
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    folder = data_root(root)
    paths = [folder / name for name in _FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST {split} files not found: {', '.join(missing)}. "
            f"Install them with `{INSTALL_HINT}` or point ${ENV_VAR} (or --data) at a folder holding them."
        )
    images, labels = (_read_idx(p) for p in paths)
    return images, labels.long()


def to_model_images(images: Tensor) -> Tensor:
    """uint8 (n, 28, 28) -> float (n, 1, 32, 32) in [0, 1], zero-padded by 2 pixels."""
    x = images.float().div(255.0)[:, None]
    return torch.nn.functional.pad(x, (2, 2, 2, 2))


def data_hash(images: Tensor, labels: Tensor) -> str:
    """sha256 of the raw bytes of a split (binds shipped weights to their training data)."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
