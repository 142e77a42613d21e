"""Plugin manager: registries, duplicate names, suggestions, entry points, ``ls``."""

from __future__ import annotations

import re
import uuid

import pytest

import bench.plugins
from bench.cli import main
from bench.config import UnknownNameError
from bench.hookspecs import hookimpl
from bench.plugins import PluginError, PluginManager
from bench.protocol import BaseModel
from bench.specs import AcceleratorSpec


class _OtherVanilla:
    """A second plugin that also claims the name 'vanilla'."""

    @hookimpl
    def register_accelerators(self, register):
        register(AcceleratorSpec(name="vanilla", config_cls=object, factory=lambda c: None))


def test_registries_list_builtins_with_providers(manager):
    assert {"vanilla", "few-step", "boom"} <= set(manager.accelerators())
    assert "maskgit" in manager.base_models()
    assert manager.get_accelerator("few-step").provider == "accelerators.few_step"
    assert manager.get_metric("same_tokens").provider == "bench_test_plugin"
    assert manager.default_metrics() == ["same_tokens"]  # mean_pixel, needs_data: default=False


def test_duplicate_names_name_both_providers(manager):
    manager.register(_OtherVanilla())
    with pytest.raises(PluginError) as err:
        manager.accelerators()
    msg = str(err.value)
    assert "'vanilla'" in msg and "accelerators.vanilla" in msg and "test_plugins._OtherVanilla" in msg


def test_unknown_names_suggest_near_matches(manager):
    with pytest.raises(UnknownNameError, match="Did you mean: few-step"):
        manager.get_accelerator("few_step")
    with pytest.raises(UnknownNameError, match="unknown base model 'maskgti'.*maskgit"):
        manager.get_base_model("maskgti")
    with pytest.raises(UnknownNameError, match="same_tokens"):
        manager.get_metric("same-tokens")
    with pytest.raises(UnknownNameError, match="no accelerators are registered"):
        PluginManager(autoload=False).get_accelerator("vanilla")


def test_make_from_spec_strings(manager):
    acc = manager.make_accelerator("few-step:steps=5")
    assert acc.config.steps == 5 and acc.num_steps(12) == 5
    with pytest.raises(UnknownNameError, match="unknown option 'step' for accelerator 'few-step'.*steps"):
        manager.make_accelerator("few-step:step=5")
    with pytest.raises(ValueError, match="not an integer"):
        manager.make_accelerator("few-step:steps=many")
    model = manager.make_base_model("maskgit:config=tiny", "cpu")
    assert isinstance(model, BaseModel) and model.num_image_tokens == 16


def test_register_is_idempotent_and_unregister_refreshes(manager):
    import bench_test_plugin

    manager.register(bench_test_plugin)  # already registered: no error
    assert "boom" in manager.accelerators()
    manager.unregister(bench_test_plugin)
    assert "boom" not in manager.accelerators()


def test_autoload_can_be_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(bench.plugins.NO_AUTOLOAD_ENV, "1")
    assert PluginManager().accelerators() == {}


# ------------------------------------------------------------- entry points
def _install_fake_distribution(tmp_path, accelerator_name: str) -> str:
    """A minimal installed distribution (no pip): dist-info with an entry point + a module."""
    module = f"fake_migm_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from dataclasses import dataclass\n"
        "from bench.hookspecs import hookimpl\n"
        "from bench.specs import AcceleratorSpec\n\n"
        "@dataclass(frozen=True)\n"
        "class FakeConfig:\n    level: int = 1\n\n"
        "@hookimpl\n"
        "def register_accelerators(register):\n"
        f"    register(AcceleratorSpec(name={accelerator_name!r}, config_cls=FakeConfig,\n"
        "        factory=lambda c: None, description='from a fake distribution',\n"
        "        default_sweep=({'level': 1}, {'level': 2})))\n"
    )
    info = tmp_path / "fake_migm_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-migm-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[migm_bench]\nfake = {module}\n")
    return module


@pytest.fixture
def autoload(monkeypatch, tmp_path):
    """Entry points on, the cached manager reset, ``tmp_path`` on sys.path."""
    monkeypatch.delenv(bench.plugins.NO_AUTOLOAD_ENV, raising=False)
    monkeypatch.setattr(bench.plugins, "_default_manager", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_installed_distribution_is_listed_by_ls(autoload, capsys):
    _install_fake_distribution(autoload, "fake-accel")
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "fake-accel" in ln)
    assert "[fake-migm-plugin 0.1]" in line and "default sweep: 2" in line
    assert "from a fake distribution" in line
    # the package's own built-ins come through its entry points too
    assert any("vanilla" in ln and "[migm-bench " in ln for ln in out.splitlines())


def test_distribution_clash_names_both_distributions(autoload, capsys):
    _install_fake_distribution(autoload, "vanilla")
    with pytest.raises(PluginError, match="accelerator 'vanilla' is provided by both") as err:
        PluginManager().accelerators()
    assert "fake-migm-plugin 0.1" in str(err.value) and re.search(r"migm-bench \d", str(err.value))
    assert main(["ls"]) == 2  # the CLI reports it in one line, no traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fake-migm-plugin 0.1" in err
