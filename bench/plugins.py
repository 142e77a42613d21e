"""The plugin manager: every base model, accelerator and metric is a plugin.

Built on pluggy the way its ``eggsample`` example and simonw/llm (``llm/plugins.py``) do:
the host adds the hookspecs of ``bench.hookspecs``, loads the ``migm_bench`` entry points
(the package's own built-ins come through its own entry points, like any third-party
plugin), and collects typed specs through the register-style hooks. As in conda's plugin
manager (``conda/plugins/manager.py``), two plugins claiming one name is an error that
names both providers; as in lm-evaluation-harness's registry, an unknown name suggests
near matches.

Tests build a fresh ``PluginManager(autoload=False)`` and register test-only plugins; the
CLI uses the cached ``get_manager()``. Set ``MIGM_BENCH_NO_AUTOLOAD=1`` to skip entry points.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from collections.abc import Callable, Iterable
from typing import Any

import pluggy
import torch

from bench import hookspecs
from bench.config import UnknownNameError, build_config, parse_spec, suggest
from bench.hookspecs import PROJECT
from bench.protocol import Accelerator, BaseModel
from bench.specs import AcceleratorSpec, BaseModelSpec, Metric, MetricSpec

ENTRY_POINT_GROUP = PROJECT  # "migm_bench"
NO_AUTOLOAD_ENV = "MIGM_BENCH_NO_AUTOLOAD"


class PluginError(RuntimeError):
    """A plugin could not be loaded, or two plugins conflict."""


def _autoload_default() -> bool:
    return os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def _dist_label(dist: Any) -> str:
    """'name version' of an importlib.metadata distribution (or pluggy's facade of one)."""
    return f"{dist.metadata['Name']} {dist.version}"


def _module_label(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)  # a module plugin
    if isinstance(name, str):
        return name
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


# (hook name, spec class, what users call it, how to get a spec's name)
_KINDS: dict[str, tuple[str, type, Callable[[Any], str]]] = {
    "base model": ("register_base_models", BaseModelSpec, lambda s: s.name),
    "accelerator": ("register_accelerators", AcceleratorSpec, lambda s: s.name),
    "metric": ("register_metrics", MetricSpec, lambda s: s.info.name),
}


class PluginManager:
    """pluggy's manager plus the registries of base models, accelerators and metrics.

    autoload: load the ``migm_bench`` entry points (default: yes unless the environment
    variable ``MIGM_BENCH_NO_AUTOLOAD`` is set). plugins: extra plugin objects/modules.
    """

    def __init__(self, autoload: bool | None = None, plugins: Iterable[object] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._registries: dict[str, dict[str, Any]] | None = None
        if _autoload_default() if autoload is None else autoload:
            self.load_entry_points()
        for plugin in plugins:
            self.register(plugin)

    # ---------------------------------------------------------------- registration
    def load_entry_points(self) -> int:
        """Load every installed ``migm_bench`` entry point (pluggy's
        ``load_setuptools_entrypoints``), with errors that name the distribution."""
        try:
            count = self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as err:  # name the culprit instead of a bare ImportError
            raise PluginError(self._describe_load_failure(err)) from err
        self._check_entry_point_clashes()
        self._registries = None
        return count

    def _describe_load_failure(self, err: Exception) -> str:
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.pm.has_plugin(ep.name):
                    continue
                try:
                    ep.load()
                except Exception as inner:  # noqa: BLE001 (any import-time error of a plugin)
                    return (
                        f"cannot load plugin {ep.name!r} ({ep.value}) of {_dist_label(dist)}: "
                        f"{type(inner).__name__}: {inner}"
                    )
        return f"cannot load the {ENTRY_POINT_GROUP} plugins: {type(err).__name__}: {err}"

    def _check_entry_point_clashes(self) -> None:
        """pluggy silently skips an entry point whose name is taken; two *different*
        distributions using one entry-point name is a conflict we report."""
        loaded = {self.pm.get_name(p): d for p, d in self.pm.list_plugin_distinfo()}
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or ep.name not in loaded:
                    continue
                other = loaded[ep.name]
                if _norm(other.metadata["Name"]) != _norm(dist.metadata["Name"]):
                    raise PluginError(
                        f"plugin name {ep.name!r} is used by both {_dist_label(other)} and "
                        f"{_dist_label(dist)}; uninstall one of them"
                    )

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin module/object (no-op if it is already registered)."""
        if not self.pm.is_registered(plugin):
            self.pm.register(plugin, name=name)
            self._registries = None

    def unregister(self, plugin: object) -> None:
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
            self._registries = None

    def provider_of(self, plugin: object) -> str:
        """'distribution version' for entry-point plugins, else the module name."""
        for p, dist in self.pm.list_plugin_distinfo():
            if p is plugin:
                return _dist_label(dist)
        return _module_label(plugin)

    # ------------------------------------------------------------------ registries
    def _collect(self) -> dict[str, dict[str, Any]]:
        if self._registries is not None:
            return self._registries
        registries: dict[str, dict[str, Any]] = {}
        for kind, (hook_name, spec_cls, name_of) in _KINDS.items():
            found: dict[str, Any] = {}
            hook = getattr(self.pm.hook, hook_name)
            # Call each implementation ourselves so we know which plugin registered what.
            for impl in hook.get_hookimpls():
                provider = self.provider_of(impl.plugin)
                register = self._registrar(kind, spec_cls, name_of, provider, found)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginError:
                    raise
                except Exception as err:  # re-raised with the provider named
                    raise PluginError(f"{provider}: {hook_name} failed: {type(err).__name__}: {err}") from err
            registries[kind] = dict(sorted(found.items()))
        self._registries = registries
        return registries

    @staticmethod
    def _registrar(kind, spec_cls, name_of, provider, found) -> Callable[[Any], None]:
        def register(spec: Any) -> None:
            if not isinstance(spec, spec_cls):
                raise PluginError(
                    f"{provider} registered a {type(spec).__name__} as a {kind}; expected {spec_cls.__name__}"
                )
            name = name_of(spec)
            if name in found:
                raise PluginError(
                    f"{kind} {name!r} is provided by both {found[name].provider} "
                    f"and {provider}; uninstall or rename one of them"
                )
            found[name] = dataclasses.replace(spec, provider=provider)

        return register

    def base_models(self) -> dict[str, BaseModelSpec]:
        return self._collect()["base model"]

    def accelerators(self) -> dict[str, AcceleratorSpec]:
        return self._collect()["accelerator"]

    def metrics(self) -> dict[str, MetricSpec]:
        return self._collect()["metric"]

    def _get(self, kind: str, name: str) -> Any:
        registry = self._collect()[kind]
        if name not in registry:
            known = f"no {kind}s are registered" if not registry else ""
            raise UnknownNameError(f"unknown {kind} {name!r}.{suggest(name, registry) or ' ' + known}")
        return registry[name]

    def get_base_model(self, name: str) -> BaseModelSpec:
        return self._get("base model", name)

    def get_accelerator(self, name: str) -> AcceleratorSpec:
        return self._get("accelerator", name)

    def get_metric(self, name: str) -> MetricSpec:
        return self._get("metric", name)

    # -------------------------------------------------------------------- builders
    def accelerator_config(self, spec: str) -> tuple[AcceleratorSpec, Any]:
        """'few-step:steps=8' -> (its AcceleratorSpec, FewStepConfig(steps=8)); nothing built."""
        name, options = parse_spec(spec)
        acc = self.get_accelerator(name)
        return acc, build_config(acc.config_cls, options, owner=f"accelerator {name!r}")

    def make_accelerator(self, spec: str) -> Accelerator:
        """Build the accelerator described by ``spec`` ('name:key=value,...')."""
        acc, config = self.accelerator_config(spec)
        return acc.factory(config)

    def base_model_config(self, spec: str) -> tuple[BaseModelSpec, Any]:
        name, options = parse_spec(spec)
        model = self.get_base_model(name)
        return model, build_config(model.config_cls, options, owner=f"base model {name!r}")

    def make_base_model(self, spec: str, device: torch.device | str = "cpu") -> BaseModel:
        """Build the base model described by ``spec`` (e.g. 'maskgit:config=tiny') on ``device``."""
        model, config = self.base_model_config(spec)
        return model.factory(config, torch.device(device))

    def make_metric(self, name: str, model: BaseModel) -> Metric:
        """Build metric ``name`` for ``model`` (may raise ``bench.specs.MetricUnavailable``)."""
        return self.get_metric(name).factory(model)

    def default_metrics(self) -> list[str]:
        return [name for name, spec in self.metrics().items() if spec.default]

    # -------------------------------------------------------------------- commands
    def add_commands(self, subparsers: Any) -> None:
        """Let plugins add CLI sub-commands (``register_commands`` hook)."""
        self.pm.hook.register_commands(subparsers=subparsers)


def _norm(dist_name: str) -> str:
    """PEP 503 normalisation: 'Fake_Plugin' and 'fake-plugin' are one distribution."""
    return "-".join(filter(None, dist_name.lower().replace("_", "-").replace(".", "-").split("-")))


_default_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager (entry points loaded on first use)."""
    global _default_manager
    if _default_manager is None:
        _default_manager = PluginManager()
    return _default_manager


def reset_manager() -> None:
    """Forget the cached manager (the next ``get_manager()`` reloads the entry points)."""
    global _default_manager
    _default_manager = None
