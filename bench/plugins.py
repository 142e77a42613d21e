"""The plugin manager: every base model, accelerator and metric is a plugin.

Built on pluggy the way its ``eggsample`` example, pytest and simonw/llm (``llm/plugins.py``)
do: the host adds the hookspecs of ``bench.hookspecs``, registers its built-in plugins from an
explicit tuple of module names (``BUILTIN_PLUGINS``), then loads the ``migm_bench`` entry
points of other distributions, one at a time: a plugin that fails to import or to register is
recorded in ``broken`` (``migm-bench ls`` lists it with its error) and skipped, so the rest
keeps working. Registries are collected through pluggy's own hook calls, one plugin at a
time (``subset_hook_caller``) so that each spec is attributed to its provider. As in conda's
plugin manager (``conda/plugins/manager.py``), two plugins claiming one name is an error that
names both providers; as in lm-evaluation-harness's registry, an unknown name suggests near
matches, and specs name their code lazily (``bench.lazy``), so registering imports no torch.

Tests build a fresh ``PluginManager(autoload=False)`` (nothing registered) and register the
plugins they need; the CLI uses the cached ``get_manager()``. ``MIGM_BENCH_NO_AUTOLOAD=1``
skips the entry points of other distributions; the built-ins are still registered.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

from bench import hookspecs
from bench.config import UnknownNameError, build_config, parse_spec, suggest
from bench.hookspecs import PROJECT
from bench.specs import AcceleratorSpec, BaseModelSpec, Metric, MetricSpec

if TYPE_CHECKING:
    import torch

    from bench.protocol import Accelerator, BaseModel

ENTRY_POINT_GROUP = PROJECT  # "migm_bench"
NO_AUTOLOAD_ENV = "MIGM_BENCH_NO_AUTOLOAD"
OWN_DISTRIBUTION = "migm-bench"
# The plugins that ship with migm-bench, registered explicitly (as pytest's
# ``default_plugins`` and llm's ``DEFAULT_PLUGINS``): light modules whose hooks name the
# heavy code lazily. Listed here by name only: bench/ imports no concrete plugin.
BUILTIN_PLUGINS = (
    "accelerators.hooks.vanilla",
    "accelerators.hooks.few_step",
    "accelerators.hooks.ml_cache",
    "accelerators.hooks.recap",
    "accelerators.hooks.taylorseer",
    "accelerators.hooks.dllm_cache",
    "accelerators.shortcut.hooks",
    "base_models.maskgit.hooks",
    "base_models.dimoo.hooks",
    "base_models.fashion.hooks",  # the default base model (bench.cli.DEFAULT_MODEL)
    "base_models.fashion.commands",
    "base_models.fashion.metric_hooks",  # FID / classifier metrics on Fashion-MNIST
    "base_models.fashion_t2i.hooks",  # the text-to-image default and its caption prompt set
    "base_models.fashion_t2i.metric_hooks_t2i",  # attribute accuracy, FID / KID of the text-to-image default
    "bench.metric_hooks",  # generic metrics against vanilla at the same seed
    "metrics.plugin",  # clip_score, image_reward (opt-in), `migm-bench prompts`
)


class PluginError(RuntimeError):
    """A plugin could not be loaded, or two plugins conflict."""


def _autoload_default() -> bool:
    return os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def _dist_label(dist: Any) -> str:
    """'name version' of an importlib.metadata distribution."""
    return f"{dist.metadata['Name']} {dist.version}"


def _own_label() -> str:
    """How the built-ins' provider reads: 'migm-bench <version>'."""
    try:
        return f"{OWN_DISTRIBUTION} {importlib.metadata.version(OWN_DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return f"{OWN_DISTRIBUTION} (not installed)"


def _module_label(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)  # a module plugin
    if isinstance(name, str):
        return name
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


# (hook name, spec class, what users call it, how to get a spec's name)
_KINDS: dict[str, tuple[str, type, Callable[[Any], str]]] = {
    "base model": ("register_base_models", BaseModelSpec, lambda s: s.name),
    "accelerator": ("register_accelerators", AcceleratorSpec, lambda s: s.name),
    "metric": ("register_metrics", MetricSpec, lambda s: s.info.name),
}


class PluginManager:
    """pluggy's manager plus the registries of base models, accelerators and metrics.

    autoload: register the built-ins and load the ``migm_bench`` entry points of other
    distributions. None (the CLI): both, unless ``MIGM_BENCH_NO_AUTOLOAD`` is set, which keeps
    the built-ins only; False (tests): nothing but ``plugins``. plugins: extra plugin
    objects/modules, registered last.
    """

    def __init__(self, autoload: bool | None = None, plugins: Iterable[object] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._registries: dict[str, dict[str, Any]] = {}
        self._providers: dict[str, str] = {}  # pluggy plugin name -> 'distribution version'
        self._entry_points: dict[str, str] = {}  # loaded entry point -> 'module of distribution'
        self.broken: dict[str, str] = {}  # entry-point name -> what it is and why it was skipped
        if autoload is not False:
            self.register_builtins()
            if autoload or _autoload_default():
                self.load_entry_points()
        for plugin in plugins:
            self.register(plugin)

    # ---------------------------------------------------------------- registration
    def register_builtins(self) -> None:
        """Register ``BUILTIN_PLUGINS`` (provider: this distribution)."""
        own = _own_label()
        for module_name in BUILTIN_PLUGINS:
            plugin = importlib.import_module(module_name)
            self.register(plugin, name=module_name)
            self._providers[module_name] = own

    def load_entry_points(self) -> int:
        """Load the other distributions' ``migm_bench`` entry points, each on its own: one that
        fails to import or register goes to ``self.broken`` and is skipped. Returns how many
        were registered. Our own distribution's entry points (older installs declared the
        built-ins there) are skipped: ``register_builtins`` has them."""
        count = 0
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist
            if ep.module in BUILTIN_PLUGINS or (dist is not None and _norm(dist.name) == OWN_DISTRIBUTION):
                continue
            if self._clashes(ep) or self.pm.is_blocked(ep.name):
                continue
            where = f"{ep.value} of {_dist_label(dist)}"
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as err:  # noqa: BLE001 (any import-time error of a plugin)
                self.broken[ep.name] = f"{where}: {_one_line(err)}"
                continue
            try:
                self.pm.check_pending()  # a hook name that no spec declares (e.g. a typo)
            except pluggy.PluginValidationError as err:
                self.pm.unregister(plugin)
                self.broken[ep.name] = f"{where}: {_one_line(err)}"
                continue
            self._providers[ep.name] = _dist_label(dist)
            self._entry_points[ep.name] = where
            count += 1
        self._registries = {}
        return count

    def _clashes(self, ep: importlib.metadata.EntryPoint) -> bool:
        """An entry-point name already registered: the same distribution seen twice is
        skipped (True); two *different* distributions using one name is a conflict."""
        if self.pm.get_plugin(ep.name) is None:
            return False
        other = self._providers.get(ep.name, ep.name)
        mine = _dist_label(ep.dist)
        if _norm(other.rsplit(" ", 1)[0]) != _norm(ep.dist.name):
            raise PluginError(
                f"plugin name {ep.name!r} is used by both {other} and {mine}; uninstall one of them"
            )
        return True

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin module/object (no-op if it is already registered)."""
        if not self.pm.is_registered(plugin):
            self.pm.register(plugin, name=name)
            self._registries = {}

    def unregister(self, plugin: object) -> None:
        if self.pm.is_registered(plugin):
            self.pm.unregister(plugin)
            self._registries = {}

    def provider_of(self, plugin: object) -> str:
        """'distribution version' for built-ins and entry-point plugins, else the module name."""
        return self._providers.get(self.pm.get_name(plugin) or "", _module_label(plugin))

    # ------------------------------------------------------------------ registries
    def _collect(self, kind: str) -> dict[str, Any]:
        """The registry of one kind, collected through pluggy's hook calling (its argument
        matching and call order), one plugin at a time so each spec names its provider."""
        if kind in self._registries:
            return self._registries[kind]
        hook_name, spec_cls, name_of = _KINDS[kind]
        found: dict[str, Any] = {}
        for plugin in self._implementers(hook_name):
            specs: list[Any] = []
            if self._call_plugin(plugin, hook_name, register=specs.append):
                for spec in specs:
                    self._add(found, spec, kind, spec_cls, name_of, self.provider_of(plugin))
        self._registries[kind] = dict(sorted(found.items()))
        return self._registries[kind]

    def _implementers(self, hook_name: str) -> list[object]:
        """The plugins implementing ``hook_name``, in pluggy's call order (the last registered
        first; ``tryfirst`` / ``trylast`` respected)."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()  # pluggy calls them last to first
        return list(dict.fromkeys(impl.plugin for impl in reversed(impls)))

    def _call_plugin(self, plugin: object, hook_name: str, **kwargs: Any) -> bool:
        """Call ``plugin``'s implementation of ``hook_name`` through pluggy (its documented
        ``subset_hook_caller``, every other plugin left out). An entry-point plugin that
        raises is skipped like one that fails to import (False); a built-in or explicitly
        registered plugin that raises is an error naming it."""
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        try:
            self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
        except PluginError:
            raise
        except Exception as err:  # re-raised with the provider named
            why = f"{hook_name} failed: {_one_line(err)}"
            if self._skip_broken(plugin, why):
                return False
            raise PluginError(f"{self.provider_of(plugin)}: {why}") from err
        return True

    def _skip_broken(self, plugin: object, why: str) -> bool:
        name = self.pm.get_name(plugin)
        if name not in self._entry_points:
            return False
        self.broken[name] = f"{self._entry_points.pop(name)}: {why}"
        self.unregister(plugin)  # also forgets the registries it may already be part of
        return True

    @staticmethod
    def _add(
        found: dict[str, Any], spec: Any, kind: str, spec_cls: type, name_of: Callable, provider: str
    ) -> None:
        if not isinstance(spec, spec_cls):
            raise PluginError(
                f"{provider} registered a {type(spec).__name__} as a {kind}; expected {spec_cls.__name__}"
            )
        try:
            name = name_of(spec)  # a metric's name is in its info, which may be a lazy reference
        except Exception as err:  # e.g. ImportError of a lazy reference: name the provider
            raise PluginError(f"{provider}: cannot read the {kind}'s name: {_one_line(err)}") from err
        if name in found:
            raise PluginError(
                f"{kind} {name!r} is provided by both {found[name].provider} "
                f"and {provider}; uninstall or rename one of them"
            )
        found[name] = _with_provider(spec, provider)

    def base_models(self) -> dict[str, BaseModelSpec]:
        return self._collect("base model")

    def accelerators(self) -> dict[str, AcceleratorSpec]:
        return self._collect("accelerator")

    def metrics(self) -> dict[str, MetricSpec]:
        return self._collect("metric")

    def _get(self, kind: str, name: str) -> Any:
        registry = self._collect(kind)
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
        import torch  # the model's own module imports it anyway

        model, config = self.base_model_config(spec)
        return model.factory(config, torch.device(device))

    def make_metric(self, name: str, model: BaseModel) -> Metric:
        """Build metric ``name`` for ``model`` (may raise ``bench.specs.MetricUnavailable``)."""
        return self.get_metric(name).factory(model)

    def default_metrics(self) -> list[str]:
        return [name for name, spec in self.metrics().items() if spec.default]

    def resolve_prompts(self, spec: str) -> tuple[list[str], dict[str, Any]]:
        """(prompts, record) of a prompt spec (``resolve_prompts`` hook, the first plugin that
        owns it). ValueError (one line) when no plugin resolves it or the one that owns it
        cannot."""
        if not self._implementers("resolve_prompts"):
            raise ValueError(
                "no prompt sets are registered (the metrics.plugin module provides them: parti, geneval, prompt files)"
            )
        found = self.pm.hook.resolve_prompts(spec=spec)
        if found is None:
            raise ValueError(f"no prompt-set plugin understands {spec!r}")
        prompts, record = found
        return [str(p) for p in prompts], dict(record)

    # -------------------------------------------------------------------- commands
    def add_commands(self, subparsers: Any) -> None:
        """Let plugins add CLI sub-commands (``register_commands`` hook)."""
        for plugin in self._implementers("register_commands"):
            self._call_plugin(plugin, "register_commands", subparsers=subparsers)


def _with_provider(spec: Any, provider: str) -> Any:
    """A copy of ``spec`` with ``provider`` set; unlike ``dataclasses.replace`` it does not
    read (and so import) the spec's lazy fields."""
    clone = copy.copy(spec)
    object.__setattr__(clone, "provider", provider)  # frozen dataclass: set on the fresh copy
    return clone


def _norm(dist_name: str) -> str:
    """PEP 503 normalisation: 'Fake_Plugin' and 'fake-plugin' are one distribution."""
    return "-".join(filter(None, dist_name.lower().replace("_", "-").replace(".", "-").split("-")))


_default_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager (plugins registered on first use)."""
    global _default_manager
    if _default_manager is None:
        _default_manager = PluginManager()
    return _default_manager


def reset_manager() -> None:
    """Forget the cached manager (the next ``get_manager()`` registers the plugins again)."""
    global _default_manager
    _default_manager = None
