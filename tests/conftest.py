"""Shared fixtures: a fresh plugin manager per test (entry points off) with the built-ins
and the test-only plugin ``bench_test_plugin`` registered explicitly."""

from __future__ import annotations

import importlib

import bench_test_plugin
import pytest

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


@pytest.fixture(autouse=True)
def _disarm_interrupt():
    bench_test_plugin.INTERRUPT["armed"] = False
    yield
    bench_test_plugin.INTERRUPT["armed"] = False
