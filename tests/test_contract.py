"""The contract every accelerator keeps, run over every registered accelerator.

The checks themselves ship in the package (``bench.contract``; ``migm-bench check NAME`` runs
them on any installed plugin); this file runs them over the built-ins.

Accelerators are discovered through the plugin manager (``bench.plugins``): the built-ins
(``bench.plugins.BUILTIN_PLUGINS``: vanilla, few-step, the caches, the shortcut) are
registered by name, and every plugin installed under the ``migm_bench`` entry-point group
joins automatically (any third-party plugin). Each accelerator runs every configuration of its
``default_sweep`` on the tiny random MaskGIT on CPU, with and without classifier-free
guidance, and must:

* give identical tokens for the same seed (two fresh instances);
* be repeatable after ``reset`` (one instance reused across seeds);
* report sane counts (full forwards never above vanilla's N; nothing negative; partial
  coverage in [0, 1]);
* return finite logits of shape (B, P, V) (and features of shape (B, L, D) if any);
* end with every token in [0, V);
* follow the ``steps=0`` convention (0 = the base model's default N) if it accepts 0.

The tiny model itself keeps the base-model contract (``bench.contract.BASE_MODEL_CHECKS``).

The shortcut's trained network is bound to a base model, so a fixture writes untrained
(seeded) shortcut weights for the tiny model and the shortcut runs the contract like the
rest. A third-party accelerator whose weights do not exist for the tiny model is skipped,
with the reason, when building, resetting or running it raises ``FileNotFoundError`` (or a
subclass): the convention for "a weights file is missing". Nothing else is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import accelerators.hooks.few_step
import accelerators.hooks.vanilla
from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.maskgit.testing import tiny_maskgit
from bench import contract
from bench.config import build_config, config_tag
from bench.protocol import SamplingSettings
from bench.specs import AcceleratorSpec

BUILTIN_PLUGINS = (accelerators.hooks.vanilla, accelerators.hooks.few_step)

# The sweeps are tuned for the reference N = 12 (MaskGIT-pytorch's default); the tiny model's
# own default is 6, under which e.g. few-step:steps=8 would do *more* forwards than vanilla.
REFERENCE_STEPS = 12
SETTINGS = {
    "cfg": SamplingSettings(steps=REFERENCE_STEPS, cfg_weight=2.0),
    "nocfg": SamplingSettings(steps=REFERENCE_STEPS, cfg_weight=0.0),
}


def discover_accelerators() -> dict[str, AcceleratorSpec]:
    """name -> spec of every accelerator: built-ins plus all ``migm_bench`` entry points."""
    try:
        from bench.plugins import PluginManager
    except ImportError:  # no plugin manager yet: call the built-ins' hooks directly
        found: list[AcceleratorSpec] = []
        for module in BUILTIN_PLUGINS:
            module.register_accelerators(register=found.append)
        return {spec.name: spec for spec in found}
    return PluginManager(autoload=True, plugins=BUILTIN_PLUGINS).accelerators()


ACCELERATORS = discover_accelerators()
CASES = [
    pytest.param(name, options, id=f"{name}:{config_tag(build_config(spec.config_cls, options))}")
    for name, spec in ACCELERATORS.items()
    for options in (spec.default_sweep or ({},))
]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model():
    # an 8x8 grid (P = 64) so that every sweep's N (up to 32 in the shortcut's) fits
    return tiny_maskgit(seed=0, with_vqgan=False, grid=8)


@pytest.fixture(scope="module", autouse=True)
def tiny_shortcut_weights(model, tmp_path_factory):
    """Learned accelerators get weights for the tiny model, so the contract covers them too:
    untrained shortcut networks (seeded), bound to the tiny model's fingerprint, in a
    temporary weights folder. Their outputs are meaningless; the contract is not."""
    if "shortcut" not in ACCELERATORS:
        yield
        return
    from accelerators.shortcut import weights as shortcut_weights
    from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig

    folder = tmp_path_factory.mktemp("shortcut-weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shortcut_weights, "WEIGHTS_DIR", folder)
        for nocross in (False, True):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                net = ShortcutNet.for_model(model, ShortcutNetConfig(no_cross_attention=nocross))
            shortcut_weights.save_shortcut(
                shortcut_weights.default_weights_path(model.name, "nocross" if nocross else "default"),
                net,
                model,
                0,
            )
        yield


@pytest.fixture(params=list(SETTINGS), scope="module")
def settings(request) -> SamplingSettings:
    return SETTINGS[request.param]


def builder(name: str, options: dict) -> Callable[[], Any]:
    """A zero-argument factory of fresh instances of the accelerator configuration."""
    spec = ACCELERATORS[name]
    config = build_config(spec.config_cls, options, owner=f"accelerator {name!r}")
    return lambda: spec.factory(config)


def checked(name: str, check: Callable[..., Any], *args: Any) -> None:
    """Run a ``bench.contract`` check; skip only when the configuration needs absent weights
    (building, resetting or running it raised ``FileNotFoundError``)."""
    try:
        check(*args)
    except FileNotFoundError as err:
        pytest.skip(f"{name}: its default config needs weights that do not exist for the tiny model ({err})")


# ---------------------------------------------------------------------- tests
def test_discovery_finds_the_builtins():
    assert {"vanilla", "few-step"} <= set(ACCELERATORS)
    assert all(spec.name == name for name, spec in ACCELERATORS.items())


@pytest.mark.parametrize("name, options", CASES)
def test_same_seed_gives_identical_tokens(model, settings, name, options):
    checked(name, contract.check_same_seed_gives_identical_tokens, model, builder(name, options), settings)


@pytest.mark.parametrize("name, options", CASES)
def test_reset_makes_runs_repeatable(model, settings, name, options):
    # tokens, reveal order and counts of seed 0 again after a run of seed 1 on the same instance
    checked(name, contract.check_reset_makes_runs_repeatable, model, builder(name, options), settings)


@pytest.mark.parametrize("name, options", CASES)
def test_counts_are_sane(model, settings, name, options):
    vanilla = Vanilla(VanillaConfig())
    contract.run_checked(model, vanilla, 0, settings)
    assert vanilla.counts.full_forwards == REFERENCE_STEPS
    limit = vanilla.counts.full_forwards  # the accelerator's full forwards never exceed vanilla's
    checked(name, contract.check_counts_are_sane, model, builder(name, options), settings, limit)


@pytest.mark.parametrize("name, options", CASES)
def test_finite_logits_and_valid_tokens(model, settings, name, options):
    # every step's logits (B, P, V) and features (B, L, D) finite; tokens in [0, V)
    checked(name, contract.check_finite_logits_and_valid_tokens, model, builder(name, options), settings)


@pytest.mark.parametrize("name", list(ACCELERATORS))
def test_steps_zero_means_the_model_default(name):
    spec = ACCELERATORS[name]
    contract.check_steps_zero_is_the_default(lambda opts: spec.factory(build_config(spec.config_cls, opts)))


def test_base_model_contract_on_the_tiny_maskgit(model):
    for label, check in contract.BASE_MODEL_CHECKS:
        if label != "decode to images in [0, 1]":  # the fixture's tiny model has no tokenizer
            check(model)
