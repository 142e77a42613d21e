"""Plugin manager: registries, duplicate names, suggestions, entry points, ``ls``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest

import bench.plugins
from bench.cli import main
from bench.config import UnknownNameError
from bench.hookspecs import hookimpl
from bench.lazy import load_ref
from bench.plugins import PluginError, PluginManager
from bench.protocol import BaseModel
from bench.specs import AcceleratorSpec, MetricSpec


class _OtherVanilla:
    """A second plugin that also claims the name 'vanilla'."""

    @hookimpl
    def register_accelerators(self, register):
        register(AcceleratorSpec(name="vanilla", config_cls=object, factory=lambda c: None))


def test_registries_list_builtins_with_providers(manager):
    assert {"vanilla", "few-step", "boom"} <= set(manager.accelerators())
    assert "maskgit" in manager.base_models()
    assert manager.get_accelerator("few-step").provider == "accelerators.hooks.few_step"
    assert manager.get_metric("same_tokens").provider == "bench_test_plugin"
    assert manager.default_metrics() == ["same_tokens"]  # mean_pixel, needs_data: default=False


def test_duplicate_names_name_both_providers(manager):
    manager.register(_OtherVanilla())
    with pytest.raises(PluginError) as err:
        manager.accelerators()
    msg = str(err.value)
    assert "'vanilla'" in msg and "accelerators.hooks.vanilla" in msg and "test_plugins._OtherVanilla" in msg


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


class _Second:
    """Claims 'vanilla' too; ``trylast`` (pluggy's ordering) makes it the second provider."""

    def __init__(self, trylast: bool) -> None:
        self.trylast = trylast

        @hookimpl(trylast=trylast)
        def register_accelerators(register):
            register(AcceleratorSpec(name="vanilla", config_cls=object, factory=lambda c: None))

        self.register_accelerators = register_accelerators


def test_registries_are_collected_through_pluggy_hook_calls(manager):
    calls = []
    undo = manager.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append((name, len(impls), tuple(kwargs))),
        lambda outcome, name, impls, kwargs: None,
    )
    manager.accelerators()
    undo()
    # one pluggy call per implementing plugin (vanilla, few-step, the test plugin), keywords only
    assert calls == [("register_accelerators", 1, ("register",))] * 3


@pytest.mark.parametrize("trylast", [False, True])
def test_hook_call_order_decides_who_registered_first(manager, trylast):
    second = _Second(trylast)
    manager.register(second, name="second")
    with pytest.raises(PluginError) as err:
        manager.accelerators()
    providers = re.search(r"provided by both (\S+) and (\S+);", str(err.value)).groups()
    # pluggy calls the last registered plugin first, unless it asks to be called last
    expected = (
        ("accelerators.hooks.vanilla", "second") if trylast else ("second", "accelerators.hooks.vanilla")
    )
    assert tuple(p.replace("test_plugins._Second", "second") for p in providers) == expected


class _BadReference:
    @hookimpl
    def register_metrics(self, register):
        register(MetricSpec(info="no_such_module_for_migm:INFO", factory="no_such_module_for_migm:make"))


def test_bad_lazy_references_are_errors_naming_the_provider(manager):
    manager.register(_BadReference())
    with pytest.raises(
        PluginError, match=r"_BadReference: cannot read the metric's name: ModuleNotFoundError"
    ):
        manager.metrics()
    with pytest.raises(
        ImportError, match="lazy reference 'accelerators.vanilla:Nope'.*has no attribute 'Nope'"
    ):
        load_ref("accelerators.vanilla:Nope")
    assert load_ref("accelerators.vanilla:Vanilla.step").__name__ == "step"  # attribute paths


def test_registering_imports_no_accelerator_code():
    """Specs name their code lazily ('module:attr'): registering and listing the built-ins
    imports none of it; building one imports its module."""
    code = (
        "import sys\n"
        "from bench.plugins import PluginManager\n"
        "m = PluginManager(autoload=None)\n"
        "acc = m.accelerators()\n"
        "assert 'ml-cache' in acc and len(acc['ml-cache'].default_sweep) == 2\n"
        "assert 'accelerators.ml_cache' not in sys.modules and 'torch' not in sys.modules\n"
        "assert acc['ml-cache'].config_cls.__name__ == 'MLCacheConfig'\n"
        "assert 'accelerators.ml_cache' in sys.modules\n"
    )
    env = {**os.environ, bench.plugins.NO_AUTOLOAD_ENV: "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------- entry points
def _install_fake_distribution(tmp_path, accelerator_name: str) -> str:
    """A minimal installed distribution (no pip): dist-info with an entry point + a module."""
    module = _write_plugin_module(tmp_path, accelerator_name)
    _write_distribution(tmp_path, "fake-migm-plugin", {"fake": module})
    return module


def _write_plugin_module(tmp_path, accelerator_name: str) -> str:
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
    return module


def _write_distribution(tmp_path, name: str, entry_points: dict[str, str]) -> None:
    """conda's trick: a ``*.dist-info`` with METADATA and entry_points.txt on sys.path."""
    info = tmp_path / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[migm_bench]\n{lines}")


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


def test_no_autoload_environment_keeps_builtins_only(autoload, monkeypatch):
    _install_fake_distribution(autoload, "fake-accel")
    assert "fake-accel" in PluginManager().accelerators()
    monkeypatch.setenv(bench.plugins.NO_AUTOLOAD_ENV, "1")
    accelerators = PluginManager().accelerators()
    assert "fake-accel" not in accelerators
    assert {"vanilla", "few-step", "ml-cache", "shortcut"} <= set(accelerators)
    assert re.fullmatch(r"migm-bench \S+", accelerators["vanilla"].provider)


def test_own_entry_points_do_not_register_the_builtins_twice(autoload):
    """Older installs of migm-bench declared the built-ins as entry points, and another package
    may point one at a built-in module: both are skipped (no 'provided by both' conflict)."""
    module = _write_plugin_module(autoload, "vanilla")  # would clash with the built-in vanilla
    _write_distribution(autoload, "migm-bench", {"vanilla": module})
    _write_distribution(autoload, "other-dist", {"again": "accelerators.hooks.vanilla"})
    manager = PluginManager(autoload=True)
    assert manager.pm.get_plugin("vanilla") is None and manager.pm.get_plugin("again") is None
    assert manager.accelerators()["vanilla"].provider.startswith("migm-bench ")


BROKEN_PLUGINS = {
    "missing": (
        "import no_such_module_for_migm\n",
        "ModuleNotFoundError: No module named 'no_such_module_for_migm'",
    ),
    "raises": ("raise RuntimeError('plugin exploded')\n", "RuntimeError: plugin exploded"),
    "typo": (  # a hook no spec declares
        "from bench.hookspecs import hookimpl\n@hookimpl\ndef register_accelerator(register): pass\n",
        "unknown hook 'register_accelerator'",
    ),
    "bad-args": (  # an argument the hookspec does not have
        "from bench.hookspecs import hookimpl\n@hookimpl\ndef register_accelerators(reg): pass\n",
        "PluginValidationError",
    ),
    "hook-fails": (
        "from bench.hookspecs import hookimpl\n@hookimpl\ndef register_metrics(register): 1 / 0\n",
        "register_metrics failed: ZeroDivisionError: division by zero",
    ),
}


def test_broken_plugins_are_listed_by_ls_and_skipped(autoload, capsys):
    good = _install_fake_distribution(autoload, "fake-accel")
    modules = {}
    for name, (source, _) in BROKEN_PLUGINS.items():
        modules[name] = f"broken_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (autoload / f"{modules[name]}.py").write_text(source)
    _write_distribution(autoload, "broken-plugins", modules)
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "fake-accel" in out and good  # the working plugin of another distribution is there
    broken = out.split("broken plugins:")[1].splitlines()[1:]
    assert len(broken) == len(BROKEN_PLUGINS)
    for name, (_, error) in BROKEN_PLUGINS.items():
        line = next(ln for ln in broken if ln.split()[0] == name)
        assert error in line and "broken-plugins 0.1" in line and modules[name] in line
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "broken plugins" not in capsys.readouterr().out
