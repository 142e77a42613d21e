"""The shortcut accelerator on Lumina-DiMOO (DiMOO-Shortcut) through the block protocol, on the tiny
random checkpoint folder: the step inputs follow Kaiwen-Zhu/MIGM-Shortcut's
``DiMOO-Shortcut/generators/image_generation_generator.py`` (``generate_image_shortcut``) and
``utils/shortcut.py`` (training pairs); ``shortcut collect`` / ``train`` / ``cost`` run on a
``dimoo:checkpoint=DIR,prompts=FILE`` spec end to end; the real-shape cost fraction.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

import bench.plugins
from accelerators.shortcut import cost as cost_cmd
from accelerators.shortcut import dimoo_cost, weights
from accelerators.shortcut.accelerator import Shortcut, ShortcutConfig
from accelerators.shortcut.data import load_images, read_manifest
from accelerators.shortcut.dimoo_inputs import make_dimoo_pairs, net_inputs, predict_step
from accelerators.shortcut.dimoo_model import DiMOOShortcutConfig, DiMOOShortcutNet, call_flops
from accelerators.shortcut.dimoo_weights import load_dimoo_shortcut, save_dimoo_shortcut
from accelerators.shortcut.networks import dimoo_config, family_for, load_network
from accelerators.shortcut.weights import ShortcutWeightsError
from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.dimoo.flops import (
    DIMOO_8B,
    DIMOO_CODEBOOK,
    base_forward_flops,
    dimoo_seq_len,
    shortcut_flops,
)
from base_models.dimoo.testing import write_tiny_checkpoint
from base_models.dimoo.text import DIMOO_UNCOND_IDS
from bench import contract
from bench.cli import main as cli
from bench.config import build_config
from bench.forward import layout_of
from bench.plugins import PluginManager
from bench.sampling import sample

STEPS = 8  # 4 x 4 codes (resolution 64), DiMOO's keep-count schedule: 8 steps reveal 16 tokens
PROMPTS = ("a red cat on the mat", "a big blue dog under the sky .", "photo of a small green cat")
PLUGINS = ("accelerators.hooks.vanilla", "accelerators.shortcut.hooks", "base_models.dimoo.hooks")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("dimoo-sc"))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def spec(folder, prompt_file) -> str:
    return f"dimoo:checkpoint={folder},prompts={prompt_file},resolution=64,steps={STEPS}"


@pytest.fixture
def manager(monkeypatch) -> PluginManager:
    """The CLI's manager: vanilla, the shortcut and dimoo registered explicitly."""
    m = PluginManager(autoload=False, plugins=[importlib.import_module(p) for p in PLUGINS])
    monkeypatch.setattr(bench.plugins, "_default_manager", m)
    return m


@pytest.fixture(scope="module")
def model(spec):
    m = PluginManager(autoload=False, plugins=[importlib.import_module(p) for p in PLUGINS])
    return m.make_base_model(spec, "cpu")


def random_net(model, seed: int = 0, **options) -> DiMOOShortcutNet:
    """An untrained DiMOO-Shortcut for ``model`` (norm weights away from 1, so they matter)."""
    from accelerators.shortcut.model import ShortcutNetConfig

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DiMOOShortcutNet(dimoo_config(model, ShortcutNetConfig(**options))).eval()
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") or name == "ln_f.weight":
                p.data.uniform_(0.5, 1.5)
    return net


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


# ------------------------------------------------------------------ step inputs
def reference_keys(model, tokens, cond, revealed):
    """Per row, the reference's rule on the row's unpadded sequence x (``generate_image_shortcut``):
    keys = x != x before the step, plus x[:code_start-2] in the conditional stream; wte(keys) at
    their indices 0..T-1."""
    layout = layout_of(model, cond)
    before = tokens.masked_fill(revealed, model.mask_id)
    after_ids, before_ids = model._sequence_ids(tokens, cond), model._sequence_ids(before, cond)
    out = []
    for r in range(len(cond)):
        real = layout.key_mask[r]
        x, prev_x = after_ids[r][real], before_ids[r][real]
        new = x != prev_x
        if cond[r] >= 0:
            code_start = int(layout.image_positions[r, 0]) - int((~real).sum())
            new[: code_start - 2] = True
        out.append((model.transformer.embed(x[new]), new.nonzero()[:, 0]))
    return out


@torch.no_grad()
def test_keys_are_the_revealed_tokens_and_the_conditional_prompt(model):
    g = torch.Generator().manual_seed(0)
    cond = torch.tensor([1, 0, -1, -1])  # two prompts of different lengths, their unconditional rows
    P = model.num_image_tokens
    tokens = torch.randint(0, model.codebook_size, (4, P), generator=g)
    masked = torch.rand(4, P, generator=g) < 0.5
    revealed = ~masked & (torch.rand(4, P, generator=g) < 0.5)
    tokens = tokens.masked_fill(masked, model.mask_id)
    layout = layout_of(model, cond)
    x = net_inputs(model, layout, tokens, cond, revealed)
    for r, (keys, positions) in enumerate(reference_keys(model, tokens, cond, revealed)):
        valid = x.key_valid[r]
        torch.testing.assert_close(x.keys[r][valid], keys, rtol=0, atol=0)
        assert torch.equal(x.key_positions[r][valid], positions)
    prompt = layout.prompt_mask.sum(1)
    assert torch.equal(x.key_valid.sum(1), revealed.sum(1) + prompt) and prompt[2:].sum() == 0
    assert torch.equal(x.positions, layout.position_ids) and x.valid is layout.key_mask


@torch.no_grad()
def test_a_padded_row_predicts_what_its_unpadded_stream_alone_does(model):
    """The reference runs one unpadded stream at a time: padding rows and padding keys must change
    nothing at the real rows (masks really applied), and positions restart at each row's text."""
    g = torch.Generator().manual_seed(1)
    cond = torch.tensor([0, 1, -1])  # 19, 21 and 14 prompt tokens: every row padded differently
    P, L = model.num_image_tokens, model.seq_len
    tokens = torch.randint(0, model.codebook_size, (3, P), generator=g)
    revealed = torch.rand(3, P, generator=g) < 0.3
    prev = torch.randn(3, L, model.dim, generator=g)
    ratio = torch.tensor([0.7, 0.5, 0.7])
    net = random_net(model, seed=3)
    layout = layout_of(model, cond)
    out = predict_step(net, model, layout, prev, tokens, cond, revealed, ratio)
    for r, (keys, positions) in enumerate(reference_keys(model, tokens, cond, revealed)):
        real = layout.key_mask[r]
        alone = net(prev[r : r + 1, real], torch.arange(int(real.sum()))[None], ratio[r : r + 1], keys[None],
                    positions[None])  # fmt: skip
        torch.testing.assert_close(out[r : r + 1, real], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_shortcut_run_of_n_images_gives_n_runs_of_one(model, tmp_path):
    path = save_dimoo_shortcut(tmp_path / "w.safetensors", random_net(model), model.fingerprint())
    accel = Shortcut(ShortcutConfig(budget=3, weights=str(path)))
    cond = torch.tensor([0, 1, 2])
    both = sample(model, accel, cond, gens(4, 5, 6))
    assert accel.counts.full_forwards == 3 and accel.counts.other_calls == STEPS - 3
    assert (both.tokens >= 0).all() and (both.tokens < model.codebook_size).all()
    for i, seed in enumerate((4, 5, 6)):
        one = sample(model, accel, cond[i : i + 1], gens(seed))
        assert torch.equal(one.tokens, both.tokens[i : i + 1])
    vanilla = sample(model, Vanilla(VanillaConfig()), cond, gens(4, 5, 6))
    assert not torch.equal(vanilla.tokens, both.tokens)  # the shortcut steps do change the images


def test_weights_pick_the_family_and_are_bound_to_the_checkpoint(model, folder, tmp_path):
    path = save_dimoo_shortcut(tmp_path / "w.safetensors", random_net(model), model.fingerprint())
    net, _ = load_network(path, model)
    assert isinstance(net, DiMOOShortcutNet) and not net.training
    other = save_dimoo_shortcut(tmp_path / "o.safetensors", random_net(model), "0123456789abcdef")
    with pytest.raises(ShortcutWeightsError, match=f"fingerprint 0123456789abcdef.*{model.fingerprint()}"):
        load_network(other, model)
    nocross = save_dimoo_shortcut(tmp_path / "n.safetensors", random_net(model, no_cross_attention=True),
                                  model.fingerprint())  # fmt: skip
    with pytest.raises(ShortcutWeightsError, match="no_cross_attention=False, but variant 'nocross'"):
        Shortcut(ShortcutConfig(budget=2, variant="nocross", weights=str(path))).network(model)
    assert Shortcut(ShortcutConfig(budget=2, variant="nocross", weights=str(nocross))).network(model)
    assert family_for(model).name == "dimoo"
    with pytest.raises(ShortcutWeightsError, match=f"collect --model <spec of {model.name}>"):
        Shortcut(ShortcutConfig(budget=2, weights=str(tmp_path / "absent.safetensors"))).network(model)


# ------------------------------------------------------------------ the accelerator contract
# (options, cfg): both CFG settings, the default N (steps=0) and the no-cross-attention variant
CONTRACT_CASES = [({"steps": STEPS, "budget": 3}, 4.0), ({"budget": 2}, 0.0),
                  ({"steps": STEPS, "budget": 5, "variant": "nocross"}, 4.0)]  # fmt: skip


@pytest.fixture(scope="module")
def contract_weights(model, tmp_path_factory):
    """Untrained (seeded) DiMOO-Shortcut networks for the tiny model at the default weights paths."""
    folder = tmp_path_factory.mktemp("dimoo-shortcut-weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weights, "WEIGHTS_DIR", folder)
        for nocross in (False, True):
            net = random_net(model, seed=5, no_cross_attention=nocross)
            save_dimoo_shortcut(
                weights.default_weights_path(model.name, "nocross" if nocross else "default"),
                net,
                model.fingerprint(),
            )
        yield


@pytest.mark.parametrize("options, cfg", CONTRACT_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
                         if isinstance(c, dict) else f"cfg={c}")  # fmt: skip
def test_the_shortcut_keeps_the_accelerator_contract_on_dimoo(model, contract_weights, options, cfg):
    settings = dataclasses.replace(model.default_sampling, cfg_weight=cfg)
    config = build_config(ShortcutConfig, options, owner="shortcut")

    def build():
        return Shortcut(config)

    contract.check_same_seed_gives_identical_tokens(model, build, settings)
    contract.check_reset_makes_runs_repeatable(model, build, settings)
    contract.check_counts_are_sane(model, build, settings, STEPS)
    contract.check_finite_logits_and_valid_tokens(model, build, settings)


# ------------------------------------------------------------------ collect, train, run, cost
def test_collect_train_and_run_from_the_command_line(spec, model, manager, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "shipped")  # the default weights path
    data = tmp_path / "data"
    assert cli(["shortcut", "collect", "--model", spec, "--images", "4", "--batch-size", "2", "--shard-size",
                "2", "--out", str(data), "--no-progress"]) == 0  # fmt: skip
    manifest = read_manifest(data)
    assert manifest["base_model"] == model.name and manifest["seq_len"] == model.seq_len
    traj = load_images(data, manifest, [0, 1, 2, 3])
    # image j of the collection is prompt j (mod 3): shards cover the prompt file in order
    assert traj.cond.tolist() == [0, 1, 2, 0] and traj.features.shape[:3] == (4, 2, STEPS)
    # a pair follows utils/shortcut.py: keys = reveal_step == i (+ prompt in the conditional stream)
    image, stream, step = torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0]), torch.tensor([0, 0, 5])
    b = make_dimoo_pairs(model, traj, image, stream, step, torch.device("cpu"))
    new = (traj.reveal_step[image] == step[:, None]).sum(1)
    prompt = layout_of(model, torch.tensor([1, -1, 2])).prompt_mask.sum(1)
    assert torch.equal(b.inputs.key_valid.sum(1), new + prompt) and prompt[1] == 0
    assert torch.equal(b.mask_ratio, (traj.reveal_step[image] > step[:, None]).float().mean(1))
    assert torch.equal(b.target, traj.features[image, stream, step + 1].float())
    assert torch.equal(b.loss_mask, layout_of(model, torch.tensor([1, -1, 2])).key_mask)
    # training reads the features per pair from the shards (4.4 GB per image at 1024 px): the same values
    lazy = load_images(data, manifest, [3, 1], lazy=True)  # images in collection order: 1, 3
    assert lazy.features.shape == (2, *traj.features.shape[1:])
    assert torch.equal(lazy.features[torch.tensor([1, 0]), stream[:2], step[:2]],
                       traj.features[torch.tensor([3, 1]), stream[:2], step[:2]])  # fmt: skip
    assert torch.equal(lazy.reveal_step, traj.reveal_step[[1, 3]])

    curve = tmp_path / "curve.csv"
    assert cli(["shortcut", "train", "--data", str(data), "--iters", "4", "--batch-size", "3", "--val-every",
                "2", "--val-fraction", "0.25", "--curve", str(curve), "--no-progress"]) == 0  # fmt: skip
    path = weights.default_weights_path(model.name)
    net, meta = load_dimoo_shortcut(path, model.fingerprint())
    assert meta["base_model"] == model.name and json.loads(meta["train_steps"]) == STEPS
    assert net.config == dimoo_config(model, net_config_of(net)) and net.config.inner_dim == model.dim // 2
    assert len(curve.read_text().splitlines()) == 3
    # the "narrow" variant (not in the reference): a quarter of the width, its MLP set by --mlp-width
    narrow = weights.default_weights_path(model.name, "narrow")
    with pytest.raises(ShortcutWeightsError, match="--ratio 4 --mlp-width 12"):  # 48 // 4: the hint's width
        manager.make_accelerator("shortcut:budget=3,variant=narrow").network(model)
    assert cli(["shortcut", "train", "--data", str(data), "--iters", "2", "--batch-size", "3", "--ratio", "4",
                "--mlp-width", "12", "--out", str(narrow), "--no-progress"]) == 0  # fmt: skip
    small, _ = load_dimoo_shortcut(narrow, model.fingerprint())
    assert (small.config.inner_dim, small.config.mlp_hidden_size) == (model.dim // 4, 12)
    assert net.config.mlp_hidden_size == model.block_config()["mlp_hidden_size"]  # the reference keeps F
    slim = manager.make_accelerator("shortcut:budget=3,variant=narrow")
    assert slim.network(model).config == small.config

    accel = manager.make_accelerator("shortcut:budget=3")  # the default weights path
    cond = model.conditions(2, torch.Generator())
    out = sample(model, accel, cond, gens(1, 2))
    assert (out.tokens >= 0).all() and (out.tokens < model.codebook_size).all()
    assert accel.counts.other_calls == STEPS - 3
    full = manager.make_accelerator(f"shortcut:budget={STEPS},weights={path}")  # B = N: vanilla exactly
    vanilla = sample(model, Vanilla(VanillaConfig()), cond, gens(1, 2))
    assert torch.equal(sample(model, full, cond, gens(1, 2)).tokens, vanilla.tokens)

    capsys.readouterr()
    out_json = tmp_path / "cost.json"
    assert cli(["shortcut", "cost", "--model", spec, "--rows", "4", "--replicates", "1", "--out",
                str(out_json)]) == 0  # fmt: skip
    row, slim_row = json.loads(out_json.read_text())  # every shipped variant (no nocross file here)
    assert 0 < row["c_flops"] < 1 and (row["variant"], slim_row["variant"]) == ("default", "narrow")
    assert slim_row["shortcut_flops"] < row["shortcut_flops"]
    assert "c = " in capsys.readouterr().out


def net_config_of(net: DiMOOShortcutNet):
    from accelerators.shortcut.model import ShortcutNetConfig

    c = net.config
    return ShortcutNetConfig(ratio=c.bottleneck_ratio, num_blocks=c.n_block, time_embedding=c.embed_t,
                             no_cross_attention=not c.cross_attention)  # fmt: skip


def test_train_refuses_a_collection_of_other_prompts(spec, folder, manager, tmp_path, capsys):
    data = tmp_path / "data"
    assert (
        cli(["shortcut", "collect", "--model", spec, "--images", "2", "--out", str(data), "--no-progress"])
        == 0
    )
    other = tmp_path / "other.txt"
    other.write_text("a blue cat on the mat\na big red dog under the sky .\nphoto of a small green dog\n")
    other_spec = f"dimoo:checkpoint={folder},prompts={other},resolution=64,steps={STEPS}"
    capsys.readouterr()
    assert cli(["shortcut", "train", "--data", str(data), "--model", other_spec, "--iters", "1",
                "--out", str(tmp_path / "w.safetensors"), "--no-progress"]) == 2  # fmt: skip
    assert "other prompts" in capsys.readouterr().err


@torch.no_grad()
def test_measured_cost_counts_the_network_at_the_models_layout(model):
    net = random_net(model)
    res = dimoo_cost.measure_dimoo_cost(model, net, rows=4, replicates=1)
    assert res["base_flops"] > res["shortcut_flops"] > res["head_flops"] > 0 and 0 < res["c_flops"] < 1
    assert res["net_latency_s"] > 0 and res["blocks_latency_s"] > 0 and res["net_only_ratio_latency"] > 0
    cond = model.conditions(2, torch.Generator())
    layout = layout_of(model, torch.cat([cond, model.null_conditions(cond)]))
    keys = int(layout.prompt_mask.sum(1).max()) + res["new_tokens"]  # padded to the longest row
    network = call_flops(net.config, model.seq_len, keys, streams=4)
    assert res["shortcut_flops"] - res["head_flops"] == network / 4
    assert cost_cmd.default_out("fashion", "fashion") == "results/default/shortcut_cost.json"
    assert (
        cost_cmd.default_out("dimoo:checkpoint=x", model.name) == f"results/{model.name}/shortcut_cost.json"
    )


# ------------------------------------------------------------------ real shapes
def test_real_shape_constants_are_lumina_dimoos():
    assert dimoo_cost.LAYERS == DIMOO_8B.n_layers and dimoo_cost.CODEBOOK == DIMOO_CODEBOOK
    assert dimoo_cost.UNCOND_PROMPT_TOKENS == len(DIMOO_UNCOND_IDS)
    assert dimoo_cost.stream_length(64, 1024, 1024) == dimoo_seq_len(64)[0]
    reference = DiMOOShortcutConfig()  # infer.py / train_shortcut.py defaults on the 8B config
    assert (reference.base_dim, reference.n_heads, reference.mlp_hidden_size) == (
        DIMOO_8B.d_model, DIMOO_8B.n_heads, DIMOO_8B.hidden_size)  # fmt: skip


def test_real_shape_cost_on_the_meta_device_matches_the_analytic_count():
    """1024x1024, N = 64, a 64-token prompt: the base forward of each stream counted on the meta
    device equals ``base_models.dimoo.flops``; c = 3.00 % of a base forward (1/33.3)."""
    r = dimoo_cost.real_shape_cost(64)
    cond_len, p = dimoo_seq_len(64)
    uncond_len, _ = dimoo_seq_len(len(DIMOO_UNCOND_IDS))
    base = [base_forward_flops(DIMOO_8B, n, p, DIMOO_CODEBOOK) for n in (cond_len, uncond_len)]
    assert r["base_blocks"] == sum(b.blocks for b in base) and r["head"] == sum(b.head_image for b in base)
    assert r["shortcut"] == shortcut_flops(DIMOO_8B, cond_len, 64 + 64) + shortcut_flops(
        DIMOO_8B, uncond_len, 64
    )
    assert round(r["c_flops"], 4) == 0.0300 and round(r["network_vs_blocks"], 4) == 0.0261


def test_real_shape_command_prints_the_fraction(capsys):
    assert cli(["shortcut", "dimoo-cost", "--prompt-tokens", "64", "--budgets", "14"]) == 0
    out = capsys.readouterr().out
    assert "c = 0.0300 (1/33.3)" in out and "B=14: 4.13x" in out
