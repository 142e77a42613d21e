"""Features of real images for distribution metrics, with any feature extractor.

Real-image features are computed once, kept in ``MetricContext.cache`` and on disk
(``$MIGM_BENCH_CACHE`` or ~/.cache/migm-bench) under a caller-given key that must change
when the extractor or the data change (e.g. contain the weights' hash: ``file_hash``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.specs import MetricContext


def default_cache_dir() -> Path:
    """$MIGM_BENCH_CACHE, else ~/.cache/migm-bench."""
    return Path(os.environ.get("MIGM_BENCH_CACHE") or Path.home() / ".cache" / "migm-bench")


class FrozenExtractor(nn.Module):
    """Wraps a feature module for torchmetrics: eval mode forever, no autograd,
    ``num_features`` set (so torchmetrics skips its dummy forward)."""

    def __init__(self, module: nn.Module, num_features: int) -> None:
        super().__init__()
        self.module = module
        self.num_features = int(num_features)

    def train(self, mode: bool = True) -> FrozenExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if out.dim() != 2:
            raise ValueError(f"feature extractor must return (n, d) features, got shape {tuple(out.shape)}")
        return out


def module_device(module: nn.Module) -> torch.device:
    """Where the module's parameters live (CPU for a parameter-free module)."""
    return next(iter(module.parameters()), torch.empty(0)).device


@torch.no_grad()
def extract_features(module: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """(n, C, H, W) -> (n, d) float32 features on CPU, ``batch_size`` images at a time."""
    module.eval()
    device = module_device(module)
    chunks = [
        module(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def file_hash(path: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of a file's bytes: keys caches of real-data features."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_key(key: str) -> str:
    if not key or any(c in key for c in "/\\") or key.startswith("."):
        raise ValueError(f"cache key {key!r} must be a non-empty file-name-safe string")
    return key


class RealFeatures:
    """Features of a fixed real image set, computed once per key.

    Lookup order: ``ctx.cache["real_features/<key>"]``, then ``<cache_dir>/real_features/<key>.safetensors``,
    then extraction from ``images()`` (a callable, so the data is only loaded when needed).
    ``key`` must identify both the extractor (e.g. its weights hash) and the data.
    """

    def __init__(
        self,
        key: str,
        images: Callable[[], Tensor] | Tensor,
        extractor: nn.Module,
        cache_dir: Path | None | bool = None,
        batch_size: int = 500,
    ) -> None:
        self.key = _check_key(key)
        self._images = images
        self.extractor = extractor
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self.batch_size = batch_size
        self._example: Tensor | None = None  # one real image, for shape checks

    @property
    def disk_path(self) -> Path | None:
        return (
            None if self.cache_dir is None else self.cache_dir / "real_features" / f"{self.key}.safetensors"
        )

    def images(self) -> Tensor:
        return self._images() if callable(self._images) else self._images

    def get(self, ctx: MetricContext | None = None) -> Tensor:
        """(n_real, d) float32 features."""
        mem_key = f"real_features/{self.key}"
        if ctx is not None and mem_key in ctx.cache:
            return ctx.cache[mem_key]
        feats = self._load_disk()
        if feats is None:
            feats = extract_features(self.extractor, self.images(), self.batch_size)
            self._save_disk(feats)
        if ctx is not None:
            ctx.cache[mem_key] = feats
        return feats

    def _load_disk(self) -> Tensor | None:
        path = self.disk_path
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            feats = load_file(str(path))["features"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"ignoring unreadable real-feature cache {path}: {e}")
            return None
        if feats.dim() != 2 or len(feats) < 2:
            warnings.warn(f"ignoring real-feature cache {path} with shape {tuple(feats.shape)}")
            return None
        return feats

    def _save_disk(self, feats: Tensor) -> None:
        path = self.disk_path
        if path is None:
            return
        from bench.results import atomic_save_safetensors  # here: loading the plugin needs no pandas

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_safetensors(path, {"features": feats.contiguous()}, metadata={"key": self.key})
