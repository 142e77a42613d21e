"""A tiny Fashion-MNIST folder for tests and smoke runs: idx files of a few real images."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from base_models.fashion.data import load_fashion_mnist


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """An idx .gz file (the format ``base_models.fashion.data`` reads) holding uint8 ``tensor``."""
    dims = tuple(tensor.shape)
    header = struct.pack(">I", 0x0800 + len(dims)) + struct.pack(">" + "I" * len(dims), *dims)
    with gzip.open(path, "wb") as f:
        f.write(header + tensor.to(torch.uint8).contiguous().numpy().tobytes())


def write_tiny_fashion(folder: str | Path, n: int = 48, root=None) -> Path:
    """``folder`` with 'train' = test images [0, n) and 'test' = test images [n, 2n) of the
    installed data set (DatasetMissing when it is absent)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_fashion_mnist("test", root)
    for part, lo in (("train", 0), ("t10k", n)):
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", images[lo : lo + n])
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels[lo : lo + n])
    return folder
