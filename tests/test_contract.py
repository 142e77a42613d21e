"""The contract every accelerator keeps, run over every registered accelerator.

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
* end with every token in [0, V).

The shortcut's trained network is bound to a base model, so a fixture writes untrained
(seeded) shortcut weights for the tiny model and the shortcut runs the contract like the
rest. A third-party accelerator whose weights do not exist for the tiny model is skipped,
with the reason, when building, resetting or running it raises ``FileNotFoundError`` (or a
subclass): the convention for "a weights file is missing". Nothing else is skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

import accelerators.hooks.few_step
import accelerators.hooks.vanilla
from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.maskgit.testing import tiny_maskgit
from bench.config import build_config, config_tag
from bench.protocol import SamplingSettings, StepContext, StepOutput
from bench.sampling import SampleResult, sample
from bench.specs import AcceleratorSpec

BUILTIN_PLUGINS = (accelerators.hooks.vanilla, accelerators.hooks.few_step)

# The sweeps are tuned for the reference N = 12 (MaskGIT-pytorch's default); the tiny model's
# own default is 6, under which e.g. few-step:steps=8 would do *more* forwards than vanilla.
REFERENCE_STEPS = 12
SETTINGS = {
    "cfg": SamplingSettings(steps=REFERENCE_STEPS, cfg_weight=2.0),
    "nocfg": SamplingSettings(steps=REFERENCE_STEPS, cfg_weight=0.0),
}
N_IMAGES = 2


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
            shortcut_weights.save_shortcut(shortcut_weights.default_weights_path(model.name, nocross), net, model, 0)
        yield


@pytest.fixture(params=list(SETTINGS), scope="module")
def settings(request) -> SamplingSettings:
    return SETTINGS[request.param]


class Checked:
    """Wraps an accelerator and checks every StepOutput it returns."""

    def __init__(self, inner: Any, name: str) -> None:
        self.inner, self.name = inner, name
        self.config = inner.config

    @property
    def counts(self):  # accelerators may replace their Counts object on reset
        return self.inner.counts

    def num_steps(self, default_steps: int) -> int:
        return self.inner.num_steps(default_steps)

    def reset(self, model, batch_rows: int) -> None:
        self.inner.reset(model, batch_rows)

    def step(self, model, ctx: StepContext) -> StepOutput:
        out = self.inner.step(model, ctx)
        rows = ctx.tokens.shape[0]
        where = f"step {ctx.step}/{ctx.num_steps}"
        assert out.logits.shape == (rows, model.num_image_tokens, model.codebook_size), where
        assert torch.isfinite(out.logits).all(), f"{where}: non-finite logits"
        if out.features is not None:
            assert out.features.shape == (rows, model.seq_len, model.dim), where
            assert torch.isfinite(out.features).all(), f"{where}: non-finite features"
        return out


def build(name: str, options: dict, model, settings: SamplingSettings) -> Checked:
    """Build the accelerator; skip only when its default config needs absent weights."""
    spec = ACCELERATORS[name]
    config = build_config(spec.config_cls, options, owner=f"accelerator {name!r}")
    try:
        accelerator = spec.factory(config)
        accelerator.reset(model, N_IMAGES * (2 if settings.cfg_weight else 1))
    except FileNotFoundError as err:
        _skip_missing_weights(name, err)
    return Checked(accelerator, name)


def _skip_missing_weights(name: str, err: FileNotFoundError):
    pytest.skip(f"{name}: its default config needs weights that do not exist for the tiny model ({err})")


def run(model, accelerator: Checked, seed: int, settings: SamplingSettings) -> SampleResult:
    g = torch.Generator().manual_seed(seed)
    cond = model.conditions(N_IMAGES, g)
    try:
        return sample(model, accelerator, cond, g, settings)
    except FileNotFoundError as err:  # weights loaded lazily, on the first step that needs them
        _skip_missing_weights(accelerator.name, err)


# ---------------------------------------------------------------------- tests
def test_discovery_finds_the_builtins():
    assert {"vanilla", "few-step"} <= set(ACCELERATORS)
    assert all(spec.name == name for name, spec in ACCELERATORS.items())


@pytest.mark.parametrize("name, options", CASES)
def test_same_seed_gives_identical_tokens(model, settings, name, options):
    a = run(model, build(name, options, model, settings), 11, settings)
    b = run(model, build(name, options, model, settings), 11, settings)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.reveal_step, b.reveal_step)


@pytest.mark.parametrize("name, options", CASES)
def test_reset_makes_runs_repeatable(model, settings, name, options):
    acc = build(name, options, model, settings)
    first = run(model, acc, 0, settings)
    first_counts = dataclasses.asdict(acc.counts)
    run(model, acc, 1, settings)  # leave other state behind
    again = run(model, acc, 0, settings)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.reveal_step, again.reveal_step)
    assert dataclasses.asdict(acc.counts) == first_counts  # counts restart at every reset


@pytest.mark.parametrize("name, options", CASES)
def test_counts_are_sane(model, settings, name, options):
    vanilla = Checked(Vanilla(VanillaConfig()), "vanilla")
    run(model, vanilla, 0, settings)
    assert vanilla.counts.full_forwards == REFERENCE_STEPS

    acc = build(name, options, model, settings)
    run(model, acc, 0, settings)
    c = acc.counts
    assert 0 <= c.full_forwards <= vanilla.counts.full_forwards
    assert c.partial_forwards >= 0 and c.other_calls >= 0
    assert 0.0 <= c.partial_positions <= c.partial_forwards
    assert 0.0 <= c.as_dict()["partial_coverage"] <= 1.0
    assert c.full_forwards + c.partial_forwards + c.other_calls >= 1  # something computed the logits


@pytest.mark.parametrize("name, options", CASES)
def test_finite_logits_and_valid_tokens(model, settings, name, options):
    acc = build(name, options, model, settings)
    res = run(model, acc, 5, settings)  # Checked asserts on every step's output
    assert res.tokens.shape == (N_IMAGES, model.num_image_tokens)
    assert ((res.tokens >= 0) & (res.tokens < model.codebook_size)).all()
    assert ((res.reveal_step >= 0) & (res.reveal_step < res.steps)).all()
