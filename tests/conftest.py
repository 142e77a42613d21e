"""Shared fixtures: a fresh plugin manager per test (entry points off) with the built-ins
and the test-only plugin ``bench_test_plugin`` registered explicitly; a tiny fake
Fashion-MNIST for the training tests; a few real images for the text-to-image ones."""

from __future__ import annotations

import gzip
import importlib
import struct

import bench_test_plugin
import pytest
import torch

import bench.plugins
from bench.plugins import PluginManager

BUILTIN_PLUGINS = ("accelerators.hooks.vanilla", "accelerators.hooks.few_step", "base_models.maskgit.hooks")
TINY_MODEL = "maskgit:config=tiny"


@pytest.fixture
def manager() -> PluginManager:
    plugins = [importlib.import_module(name) for name in BUILTIN_PLUGINS] + [bench_test_plugin]
    return PluginManager(autoload=False, plugins=plugins)


@pytest.fixture
def default_manager(manager, monkeypatch) -> PluginManager:
    """``manager`` installed as the process-wide one the CLI uses (restored afterwards)."""
    monkeypatch.setattr(bench.plugins, "_default_manager", manager)
    return manager


@pytest.fixture(scope="module")
def tiny_fashion(request, tmp_path_factory):
    """An idx folder of real Fashion-MNIST images (``fashion_t2i.testing.write_tiny_fashion``):
    'train' = test images [0, n), 'test' = [n, 2n), n = the test module's ``N_TINY`` (default
    32). Skips when the data set is not installed."""
    from base_models.fashion.data import DatasetMissing
    from base_models.fashion_t2i.testing import write_tiny_fashion

    try:
        return write_tiny_fashion(tmp_path_factory.mktemp("fashion"), getattr(request.module, "N_TINY", 32))
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _disarm_interrupt():
    bench_test_plugin.INTERRUPT["armed"] = False
    yield
    bench_test_plugin.INTERRUPT["armed"] = False


def _write_idx(path, data: torch.Tensor) -> None:
    header = struct.pack(">I", 0x0800 | data.dim()) + struct.pack(">" + "I" * data.dim(), *data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    """A tiny Fashion-MNIST look-alike: class k is a bright square at a class-specific spot."""
    gen = torch.Generator().manual_seed(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, n, prefix in (("train", 256, "train"), ("test", 64, "t10k")):
        labels = torch.randint(0, 10, (n,), generator=gen)
        images = torch.randint(0, 40, (n, 28, 28), generator=gen)
        for i, k in enumerate(labels.tolist()):
            r, c = 2 + 2 * k, 2 + (k % 5) * 4
            images[i, r : r + 6, c : c + 6] = 250
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
