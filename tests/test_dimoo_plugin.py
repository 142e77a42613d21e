"""The ``dimoo`` base model plugin on a tiny random checkpoint folder in the public layout.

The generic loop (``bench.sampling.sample``) with the vanilla accelerator must give exactly the
codes of the standalone reference sampler (``base_models.dimoo.generate.generate``, the oracle)
for the same generators; a batch of n the tokens of n runs of one; a partial forward the full
forward's features at its rows (rotary positions and padding included); and every built-in
accelerator but the shortcut (which needs trained weights) keeps the contract on it (the caches'
exactness on its layout: ``tests/test_caches.py``, whose models include the tiny DiMOO).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.dimoo.generate import generate
from base_models.dimoo.model import BUILTIN_PROMPTS, DiMOOModel
from base_models.dimoo.plugin import DiMOOPluginConfig, build_dimoo
from base_models.dimoo.testing import write_tiny_checkpoint
from bench import contract
from bench.config import UnknownNameError, build_config
from bench.forward import (
    condition_index,
    full_forward,
    gather_positions,
    image_index,
    layout_of,
    partial_forward,
)
from bench.sampling import sample

STEPS = 8  # on a 4x4 grid (resolution 64, P = 16)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("dimoo-plugin"))


def build(folder, **options) -> DiMOOModel:
    opts = {"checkpoint": str(folder), "resolution": 64, "steps": STEPS, **options}
    return build_dimoo(build_config(DiMOOPluginConfig, opts, owner="dimoo"), CPU)


@pytest.fixture(scope="module")
def model(folder) -> DiMOOModel:
    return build(folder)


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def oracle(model: DiMOOModel, cond: torch.Tensor, seeds, cfg: float = 4.0, temperature: float = 1.0):
    prompts = model.prompt_token_ids(cond)
    return generate(model.transformer, prompts, model.prompt_token_ids(torch.tensor([-1]))[0], model.rows, model.cols,
                    model.tokenizer.ids, model.codebook_size, gens(*seeds), steps=STEPS, cfg_scale=cfg,
                    temperature=temperature)  # fmt: skip


def vanilla(model: DiMOOModel, cond: torch.Tensor, generator, **changes):
    settings = dataclasses.replace(model.default_sampling, **changes)
    return sample(model, Vanilla(VanillaConfig()), cond, generator, settings).tokens


# ------------------------------------------------------------------ the oracle
@pytest.mark.parametrize(
    "cfg, temperature, prompts",
    [(4.0, 1.0, (0, 1, 2)), (0.0, 1.0, (0, 1, 2)), (2.0, 0.5, (0, 1, 2)), (4.0, 1.0, (0, 3, 6))],
)
def test_vanilla_gives_the_oracle_codes(model, cfg, temperature, prompts):
    # prompts 0, 1, 2: the longest prompt (1) is in the batch, the oracle pads to the model's own L;
    # 0, 3, 6: the model pads 3 tokens more than the oracle (masked keys, shifted rows)
    cond = torch.tensor(prompts)
    want = oracle(model, cond, (1, 2, 3), cfg, temperature)
    got = vanilla(model, cond, gens(1, 2, 3), cfg_weight=cfg, temperature=temperature)
    assert torch.equal(got, want)
    assert not torch.equal(want[0], want[2])  # distinct prompts and seeds: distinct images


def test_one_generator_for_one_image_is_the_oracle(model):
    cond = torch.tensor([1])
    assert torch.equal(vanilla(model, cond, torch.Generator().manual_seed(7)), oracle(model, cond, (7,)))


def test_a_batch_of_n_gives_n_runs_of_one(model):
    cond = torch.tensor([0, 1, 2, 5])
    both = vanilla(model, cond, gens(10, 11, 12, 13))
    for i, seed in enumerate((10, 11, 12, 13)):
        assert torch.equal(vanilla(model, cond[i : i + 1], gens(seed)), both[i : i + 1])
    assert not torch.equal(vanilla(model, cond, gens(20, 21, 22, 23)), both)  # the seeds matter


def test_steps_beyond_the_image_tokens_are_refused(model, folder):
    with pytest.raises(ValueError, match="too many for 16 image tokens"):
        vanilla(model, torch.tensor([0]), gens(0), steps=17)
    with pytest.raises(ValueError, match="too many"):
        build(folder, steps=17)


# ------------------------------------------------------------------ layout and forwards
def test_layout_of_a_padded_batch(model):
    cond = torch.tensor([1, 3, -1])  # prompts of 27, 23 tokens and the 14-token unconditional one
    layout = model.sequence_layout(cond)
    assert layout is model.sequence_layout(cond)  # cached for the same tensor
    assert layout is not model.sequence_layout(cond.clone())
    L, P = model.seq_len, model.num_image_tokens
    assert L == 27 + 4 + 4 * 5 and layout.seq_len == L
    lengths = torch.tensor([27, 23, 14])
    assert torch.equal(layout.key_mask.sum(1), lengths + 4 + 4 * 5)
    assert torch.equal(layout.position_ids[:, -1], lengths + 3 + 4 * 5)  # EOA's rotary position
    assert torch.equal(layout.position_ids[1, 4:6], torch.tensor([0, 1]))  # 4 pads, then 0, 1, ...
    assert torch.equal(layout.prompt_mask.sum(1), torch.tensor([27, 23, 0]))  # no text in the uncond. row
    first_image = 27 + 2  # after the padded prompts, BOA and BOI
    assert torch.equal(layout.image_positions[0, :5], torch.tensor([0, 1, 2, 3, 5]) + first_image)
    every = torch.cat([layout.image_positions, layout.condition_positions], 1).sort(1).values
    assert torch.equal(every, torch.arange(L).expand(3, L))
    ids = model._sequence_ids(torch.tensor([[3] * P] * 3), cond)
    assert (ids.gather(1, layout.image_positions) == 3 + model.offset).all()
    masked = model._sequence_ids(model.initial_tokens(3), cond).gather(1, layout.image_positions)
    assert (masked == model.tokenizer.ids.mask).all()  # the protocol's mask V -> the tokenizer's mask id
    assert (
        ids[:, first_image - 2 : first_image]
        == torch.tensor([model.tokenizer.ids.boa, model.tokenizer.ids.boi])
    ).all()


@torch.no_grad()
def test_partial_forward_equals_the_full_forward_at_its_rows(model):
    g = torch.Generator().manual_seed(0)
    cond = torch.tensor([1, 3, -1, 6])
    P = model.num_image_tokens
    tokens = torch.randint(0, model.codebook_size, (4, P), generator=g)
    tokens = tokens.masked_fill(torch.rand(4, P, generator=g) < 0.5, model.mask_id)
    layout = layout_of(model, cond)
    feats, caches = full_forward(model, tokens, cond, layout)
    _, stale = full_forward(model, tokens.roll(1, 1), cond, layout)
    # per row: 3 image positions and 3 condition positions (prompt, specials), unsorted
    img = image_index(layout, 4, CPU)[:, [9, 0, 14]]
    other = condition_index(layout, 4, CPU)[:, [-1, -3, -12]]  # EOA, a newline, a prompt token
    positions = torch.cat([img, other], 1)
    assert layout.key_mask.gather(1, positions).all()
    sub = partial_forward(model, tokens, cond, positions, [type(c)(c.k.clone(), c.v.clone()) for c in caches])
    torch.testing.assert_close(sub, gather_positions(feats, positions), atol=1e-5, rtol=1e-5)
    every = torch.arange(model.seq_len).expand(4, -1)
    torch.testing.assert_close(
        partial_forward(model, tokens, cond, every, stale), feats, atol=1e-5, rtol=1e-5
    )
    # the rotary positions matter: the same rows at shifted positions give other features
    shifted = dataclasses.replace(layout, position_ids=layout.position_ids + 1)
    moved = partial_forward(model, tokens, cond, positions, caches, shifted)
    assert not torch.allclose(moved, sub, atol=1e-3)


def test_the_base_model_contract(model):
    for _, check in contract.BASE_MODEL_CHECKS:
        check(model)


def test_the_base_model_contract_in_bfloat16(model, folder):
    """The GPU dtype, on the CPU: the same folder loaded in bfloat16 keeps the contract."""
    from base_models.dimoo.checkpoint import load_transformer

    half = load_transformer(folder, "cpu", dtype=torch.bfloat16)
    m = DiMOOModel(half, model.tokenizer, model.vqvae, model.codebook_size, model.rows, model.cols,
                   default_sampling=model.default_sampling)  # fmt: skip
    assert m.embed(m.initial_tokens(1), torch.tensor([0])).dtype == torch.bfloat16
    for _, check in contract.BASE_MODEL_CHECKS:
        check(m)


# ------------------------------------------------------------------ prompts
def test_prompts_from_a_file_and_use_prompts(folder, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cat\n\n  a big blue dog on the mat  \n")
    m = build(folder, prompts=str(path))
    assert m.prompts == ["a red cat", "a big blue dog on the mat"]
    assert m.condition_prompts(m.conditions(3, torch.Generator())) == [
        m.prompts[0],
        m.prompts[1],
        m.prompts[0],
    ]
    assert m.prompt_record() == {"source": str(path), "count": 2}
    short = m.seq_len
    m.use_prompts(list(BUILTIN_PROMPTS[:2]), {"source": "test"})
    assert m.seq_len == model_seq_len(m) > short and m.prompt_record() == {"source": "test"}
    assert m.condition_prompts(torch.tensor([1, 0])) == list(BUILTIN_PROMPTS[1::-1])


def model_seq_len(m: DiMOOModel) -> int:
    longest = max(len(m.tokenizer.prompt_ids(p)) for p in m.prompts)
    return max(longest, len(m.tokenizer.uncond_ids())) + 4 + m.rows * (m.cols + 1)


# ------------------------------------------------------------------ spec errors
def test_spec_options_and_errors(folder, tmp_path):
    m = build(folder, height=32, width=80, cfg=2, temperature=0.5)
    assert (m.rows, m.cols, m.num_image_tokens) == (2, 5, 10)
    assert (m.default_sampling.cfg_weight, m.default_sampling.temperature) == (2.0, 0.5)
    assert m.default_sampling.cfg_schedule == "constant"
    assert tuple(m.decode(torch.zeros(1, 10, dtype=torch.long)).shape) == (1, 3, 32, 80)
    with pytest.raises(UnknownNameError, match="resolutoin"):
        build(folder, resolutoin=64)
    with pytest.raises(ValueError, match="multiples of 16"):
        build(folder, resolution=72)
    with pytest.raises(ValueError, match="both height and width"):
        build(folder, height=64)
    with pytest.raises(ValueError, match="checkpoint=DIR"):
        build("")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'} does not exist"):
        build(tmp_path / "absent")
    partial = write_tiny_checkpoint(tmp_path / "partial", tokenizer=False, vqvae=False)
    with pytest.raises(FileNotFoundError, match="lacks tokenizer.json, vqvae/config.json"):
        build(partial)


# ------------------------------------------------------------------ every accelerator
def builtin_accelerators():
    from bench.plugins import PluginManager

    manager = PluginManager(autoload=False)
    manager.register_builtins()
    return manager.accelerators()


ACCELERATORS = {name: spec for name, spec in builtin_accelerators().items() if name != "shortcut"}
CASES = [
    pytest.param(name, options, id=f"{name}:{options}")
    for name, spec in ACCELERATORS.items()
    for options in (spec.default_sweep or ({},))
]


@pytest.fixture(params=["cfg", "nocfg"], scope="module")
def settings(request, model):
    return dataclasses.replace(model.default_sampling, cfg_weight=4.0 if request.param == "cfg" else 0.0)


def test_every_builtin_accelerator_but_the_shortcut_is_covered():
    assert {"vanilla", "few-step", "ml-cache", "recap", "taylorseer", "dllm-cache"} <= set(ACCELERATORS)


@pytest.mark.parametrize("name, options", CASES)
def test_accelerator_contract_on_the_tiny_dimoo(model, settings, name, options):
    spec = ACCELERATORS[name]
    config = build_config(spec.config_cls, options, owner=f"accelerator {name!r}")

    def fresh():
        return spec.factory(config)

    contract.check_same_seed_gives_identical_tokens(model, fresh, settings)
    contract.check_reset_makes_runs_repeatable(model, fresh, settings)
    contract.check_counts_are_sane(model, fresh, settings, settings.steps)
    contract.check_finite_logits_and_valid_tokens(model, fresh, settings)
