"""MIGM-Shortcut: the network, the full-step schedule, the accelerator's wiring, weight
files bound to a base model, trajectory collection and training. Tiny MaskGIT on CPU."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from accelerators.shortcut import collect as collect_cmd
from accelerators.shortcut import train as train_cmd
from accelerators.shortcut.accelerator import Shortcut, ShortcutConfig
from accelerators.shortcut.collect import collect
from accelerators.shortcut.data import Trajectories, make_pairs, read_manifest, shard_seed
from accelerators.shortcut.hooks import register_commands
from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig, cost_per_call, embedding_tables
from accelerators.shortcut.schedule import full_steps
from accelerators.shortcut.train import TrainOptions, ema_decay, lr_factor, masked_mse, train
from accelerators.shortcut.weights import ShortcutWeightsError, load_shortcut, read_metadata, save_shortcut
from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.maskgit.testing import tiny_maskgit
from bench.config import UnknownNameError
from bench.forward import full_forward
from bench.sampling import reveal_schedule, sample

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return tiny_maskgit(0, with_vqgan=False)


def random_net(model, seed: int = 0, **config) -> ShortcutNet:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ShortcutNet.for_model(model, ShortcutNetConfig(**config)).eval()


def net_inputs(model, rows: int = 3, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(rows, model.seq_len, model.dim, generator=g)
    ids = torch.randint(0, model.codebook_size, (rows, k), generator=g)
    pos = torch.stack([torch.randperm(model.num_image_tokens, generator=g)[:k] for _ in range(rows)])
    t = torch.rand(rows, generator=g)
    return feats, ids, pos, t


# ------------------------------------------------------------------------------- network
def test_embedding_tables_reproduce_embed_tokens(tiny):
    tok, pos = embedding_tables(tiny)
    assert tok.shape == (tiny.codebook_size, tiny.dim) and pos.shape == (tiny.num_image_tokens, tiny.dim)
    ids = torch.tensor([[0, 3, 15, 7]])
    positions = torch.tensor([[0, 5, 15, 9]])
    torch.testing.assert_close(
        tok[ids] + pos[positions], tiny.embed_tokens(ids, positions), atol=1e-6, rtol=0
    )


def test_embedding_tables_reject_a_non_additive_embedding(tiny):
    class Multiplicative:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def embed_tokens(self, ids, positions):
            return tiny.transformer.tok_emb(ids) * tiny.transformer.pos_emb[0, positions]

    with pytest.raises(ValueError, match="not token \\+ position"):
        embedding_tables(Multiplicative())


def test_net_is_residual_and_keeps_shapes(tiny):
    net = random_net(tiny)
    feats, ids, pos, t = net_inputs(tiny)
    out = net(feats, ids, pos, t)
    assert out.shape == feats.shape and torch.isfinite(out).all()
    assert not torch.equal(out, feats)  # the reference does not zero-initialise: a real delta
    with torch.no_grad():  # with the output projection zeroed, only the residual path remains
        net.proj_out.weight.zero_()
        net.proj_out.bias.zero_()
    assert torch.equal(net(feats, ids, pos, t), feats)


def test_net_uses_the_time_and_the_new_tokens(tiny):
    net = random_net(tiny)
    feats, ids, pos, t = net_inputs(tiny)
    base = net(feats, ids, pos, t)
    assert not torch.allclose(base, net(feats, ids, pos, 1 - t))
    assert not torch.allclose(base, net(feats, (ids + 1) % tiny.codebook_size, pos, t))


def test_no_cross_attention_ignores_the_new_tokens(tiny):
    net = random_net(tiny, no_cross_attention=True)
    assert net.token_proj is None
    feats, ids, pos, t = net_inputs(tiny)
    other_ids = (ids + 5) % tiny.codebook_size
    other_pos = (pos + 1) % tiny.num_image_tokens
    torch.testing.assert_close(net(feats, ids, pos, t), net(feats, other_ids, other_pos, t), atol=0, rtol=0)
    torch.testing.assert_close(net(feats, ids, pos, t), net(feats, None, None, t), atol=0, rtol=0)


def test_padded_new_tokens_are_ignored(tiny):
    net = random_net(tiny)
    feats, ids, pos, t = net_inputs(tiny, k=3)
    padded_ids = torch.cat([ids, torch.zeros_like(ids[:, :2])], dim=1)
    padded_pos = torch.cat([pos, torch.zeros_like(pos[:, :2])], dim=1)
    valid = torch.arange(5)[None].expand(len(ids), 5) < 3
    torch.testing.assert_close(net(feats, padded_ids, padded_pos, t, valid), net(feats, ids, pos, t))


def test_cost_per_call_at_the_default_shape_is_under_a_twentieth():
    """The default embedded model's shape (12 blocks x width 128, 65 positions, codebook 256)."""
    from base_models.maskgit.model import MaskGITModel
    from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
    from bench.protocol import SamplingSettings

    cfg = TransformerConfig(grid=8, codebook_size=256, nclass=10, hidden_dim=128, depth=12, heads=4, mlp_dim=512,
                            dropout=0.0)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MaskGITModel(MaskTransformer(cfg), None, default_sampling=SamplingSettings(steps=16))
    cost = cost_per_call(model, random_net(model))
    assert cost["shortcut"] * 20 <= cost["base_forward"]


# ------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize(
    "steps, budget, expected",
    [
        (16, 4, [0, 4, 8, 12]),
        (16, 6, [0, 3, 5, 8, 11, 13]),  # 16k/6 = 2.67, 5.33, 8, 10.67, 13.33
        (15, 7, [0, 2, 4, 6, 9, 11, 13]),  # the paper's MaskGIT setting
        (32, 8, [0, 4, 8, 12, 16, 20, 24, 28]),
        (10, 4, [0, 2, 5, 8]),  # 2.5 -> 2 and 7.5 -> 8: Python rounds halves to even
        (4, 3, [0, 1, 3]),
        (5, 5, [0, 1, 2, 3, 4]),  # B = N: every step full
        (16, 1, [0]),
    ],
)
def test_full_step_schedule(steps, budget, expected):
    assert full_steps(steps, budget) == expected


@pytest.mark.parametrize("steps, budget", [(8, 0), (8, 9), (0, 1)])
def test_full_step_schedule_rejects_impossible_budgets(steps, budget):
    with pytest.raises(ValueError):
        full_steps(steps, budget)


# --------------------------------------------------------------------------- accelerator
def run(model, accelerator, seed: int = 0, n: int = 3, record: bool = False):
    cond = torch.arange(n) % 10
    return sample(model, accelerator, cond, torch.Generator().manual_seed(seed), record_features=record)


def test_budget_equal_to_steps_is_vanilla_exactly(tiny):
    acc = Shortcut(ShortcutConfig(steps=6, budget=6, weights="/nonexistent/never-loaded.safetensors"))
    ours = run(tiny, acc)
    ref = run(tiny, Vanilla(VanillaConfig(steps=6)))
    assert torch.equal(ours.tokens, ref.tokens)
    assert acc.counts.full_forwards == 6 and acc.counts.other_calls == 0


@pytest.fixture()
def tiny_weights(tiny, tmp_path):
    path = tmp_path / "tiny_shortcut.safetensors"
    save_shortcut(path, random_net(tiny, seed=3), tiny, train_steps=6)
    return path


def test_shortcut_steps_apply_the_network_to_both_streams(tiny, tiny_weights):
    acc = Shortcut(ShortcutConfig(steps=6, budget=2, weights=str(tiny_weights)))
    result = run(tiny, acc, record=True)
    full = full_steps(6, 2)  # [0, 3]
    assert acc.counts.full_forwards == 2 and acc.counts.other_calls == 4
    net, _ = load_shortcut(tiny_weights, tiny)
    n = 3
    for i in range(1, 6):
        if i in full:
            continue
        new = result.reveal_step == i - 1  # (n, P) tokens the previous step revealed
        pos = torch.stack([row.nonzero().squeeze(1) for row in new]).repeat(2, 1)  # both streams
        ids = torch.gather(result.tokens.repeat(2, 1), 1, pos)
        t = (result.reveal_step > i - 1).float().mean(dim=1).repeat(2)
        expected = net(result.features[i - 1], ids, pos, t)
        assert result.features[i].shape == (2 * n, tiny.seq_len, tiny.dim)
        torch.testing.assert_close(result.features[i], expected, atol=1e-5, rtol=1e-5)
    assert ((result.tokens >= 0) & (result.tokens < tiny.codebook_size)).all()


def test_missing_weights_name_the_file_and_the_commands(tiny, tmp_path):
    missing = tmp_path / "nope.safetensors"
    acc = Shortcut(ShortcutConfig(steps=6, budget=2, weights=str(missing)))
    with pytest.raises(ShortcutWeightsError, match="nope.safetensors") as err:
        run(tiny, acc)
    assert "shortcut collect" in str(err.value) and "shortcut train" in str(err.value)


def test_weights_are_bound_to_the_base_model(tiny, tiny_weights):
    other = tiny_maskgit(1, with_vqgan=False)
    with pytest.raises(ShortcutWeightsError) as err:
        load_shortcut(tiny_weights, other)
    message = str(err.value)
    assert str(tiny_weights) in message and tiny.fingerprint() in message and other.fingerprint() in message
    meta = read_metadata(tiny_weights)
    assert meta["base_fingerprint"] == tiny.fingerprint() and meta["train_steps"] == "6"
    assert ShortcutNetConfig.from_json(meta["net_config"]) == ShortcutNetConfig()


def test_variant_must_match_the_weights(tiny, tmp_path):
    path = tmp_path / "cross.safetensors"
    save_shortcut(path, random_net(tiny), tiny, train_steps=6)
    acc = Shortcut(ShortcutConfig(steps=6, budget=2, variant="nocross", weights=str(path)))
    with pytest.raises(ShortcutWeightsError, match="no_cross_attention"):
        run(tiny, acc)


def test_each_variant_has_its_own_shipped_file(tiny, tmp_path, monkeypatch):
    from accelerators.shortcut import weights
    from accelerators.shortcut.networks import MaskGITFamily

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    names = {v: weights.default_weights_path("m", v).name for v in ("default", "nocross", "narrow")}
    assert names == {"default": "m_shortcut.safetensors", "nocross": "m_shortcut_nocross.safetensors",
                     "narrow": "m_shortcut_narrow.safetensors"}  # fmt: skip
    with pytest.raises(ValueError, match="unknown shortcut variant 'wide'"):
        weights.default_weights_path("m", "wide")
    # a missing narrow file says how to train it (its own width options, not the reference's)
    with pytest.raises(ShortcutWeightsError, match="--ratio 4 --mlp-width <a quarter"):
        Shortcut(ShortcutConfig(steps=6, budget=2, variant="narrow")).network(tiny)
    with pytest.raises(ValueError, match="--mlp-width is DiMOO-Shortcut's"):
        MaskGITFamily.new_net(tiny, ShortcutNetConfig(), mlp_width=8)
    with pytest.raises(ValueError, match="mlp_width must be >= 0"):
        TrainOptions(data="d", mlp_width=-1)


def test_config_errors_are_clear():
    with pytest.raises(UnknownNameError, match="nocross"):
        Shortcut(ShortcutConfig(variant="nocros"))
    with pytest.raises(ValueError, match="budget"):
        Shortcut(ShortcutConfig(budget=0))
    with pytest.raises(ValueError, match="budget"):
        Shortcut(ShortcutConfig(steps=4, budget=5)).full_steps(4)


# ------------------------------------------------------------------------------ collect
def collect_tiny(model, out, **overrides):
    options = {"steps": 4, "images": 5, "batch_size": 2, "seed": 0, "shard_size": 2, "show_progress": False}
    options.update(overrides)
    return collect(model, out, **options)


def test_collect_writes_shards_and_a_manifest(tiny, tmp_path):
    written = collect_tiny(tiny, tmp_path)
    assert [p.name for p in written] == [f"shard-0000{i}.safetensors" for i in range(3)]
    manifest = read_manifest(tmp_path)
    assert manifest["fingerprint"] == tiny.fingerprint() and manifest["steps"] == 4
    assert [s["images"] for s in manifest["shards"]] == [2, 2, 1] and manifest["streams"] == 2
    with safe_open(str(written[0]), framework="pt") as f:
        feats, uncond = f.get_tensor("features_cond"), f.get_tensor("features_uncond")
        reveal, cond = f.get_tensor("reveal_step"), f.get_tensor("cond")
    assert feats.shape == (2, 4, tiny.seq_len, tiny.dim) and feats.dtype == torch.float16
    assert uncond.shape == feats.shape and not torch.equal(uncond, feats)
    counts = [int((reveal[0] == i).sum()) for i in range(4)]
    assert counts == reveal_schedule(tiny.num_image_tokens, 4, tiny.default_sampling.mask_schedule)
    # step 0 sees the all-mask grid: its features are a full forward of it with the condition
    f0, _ = full_forward(tiny, tiny.initial_tokens(2), cond)
    torch.testing.assert_close(feats[:, 0].float(), f0, atol=2e-2, rtol=1e-2)


def test_collect_resumes_without_rewriting_and_is_rank_independent(tiny, tmp_path):
    first = collect_tiny(tiny, tmp_path / "a")
    stamps = {p: p.stat().st_mtime_ns for p in first}
    assert collect_tiny(tiny, tmp_path / "a") == []  # everything is there: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in first} == stamps
    first[1].unlink()
    assert collect_tiny(tiny, tmp_path / "a") == [first[1]]
    # rank 1 of 2 takes shard 1 only, and produces the same bytes as a single process
    assert collect_tiny(tiny, tmp_path / "b", rank=1, world=2) == [tmp_path / "b" / first[1].name]
    with (
        safe_open(str(first[1]), framework="pt") as a,
        safe_open(str(tmp_path / "b" / first[1].name), "pt") as b,
    ):
        for key in a.keys():  # noqa: SIM118 (safe_open is not iterable)
            assert torch.equal(a.get_tensor(key), b.get_tensor(key))
    with pytest.raises(ValueError, match="different trajectory collection"):
        collect_tiny(tiny, tmp_path / "a", steps=3)
    assert shard_seed(0, 1) != shard_seed(1, 0)


# ---------------------------------------------------------------------------- training
def test_make_pairs_follows_the_reference():
    # 1 image, 1 stream, N = 3 steps, P = 4 image tokens + 1 condition position, D = 2
    feats = torch.arange(3 * 5 * 2, dtype=torch.float16).view(1, 1, 3, 5, 2)
    data = Trajectories(
        features=feats, reveal_step=torch.tensor([[1, 0, 2, 1]]), tokens=torch.tensor([[7, 8, 9, 6]])
    )
    b = make_pairs(data, torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    torch.testing.assert_close(b.prev[1], feats[0, 0, 1].float())
    torch.testing.assert_close(b.target[1], feats[0, 0, 2].float())
    assert b.new_positions.tolist() == [[1, 0], [0, 3]]  # step 0 revealed 1 token, step 1 two
    assert b.new_valid.tolist() == [[True, False], [True, True]]
    assert b.new_ids[1].tolist() == [7, 6] and b.new_ids[0, 0].item() == 8
    assert b.mask_ratio.tolist() == [0.75, 0.25]
    assert b.loss_mask.tolist() == [[True, False, True, True, False], [False, False, True, False, False]]


def test_masked_mse_counts_only_masked_positions():
    pred, target = torch.zeros(1, 3, 2), torch.tensor([[[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((1 + 1 + 4 + 4) / 4)


def test_learning_rate_and_ema_schedules():
    step = TrainOptions(data="", iters=100, decay_at=10)
    assert [lr_factor(step, i) for i in (0, 9, 10, 99)] == [1.0, 1.0, 0.1, 0.1]  # reference: x0.1 at 1000
    cosine = TrainOptions(data="", iters=100, lr_schedule="cosine", decay_factor=0.01)
    assert lr_factor(cosine, 0) == 1.0 and lr_factor(cosine, 100) == pytest.approx(0.01)
    assert ema_decay(step, 1) == pytest.approx(2 / 11) and ema_decay(step, 10**6) == step.ema
    assert ema_decay(TrainOptions(data="", ema_warmup=False), 1) == 0.999
    with pytest.raises(ValueError, match="lr schedule"):
        TrainOptions(data="", lr_schedule="linear")


def tiny_options(tmp_path, **overrides) -> TrainOptions:
    options = {
        "data": str(tmp_path / "data"),
        "out": str(tmp_path / "w.safetensors"),
        "work": str(tmp_path / "work"),
        "curve": str(tmp_path / "curve.csv"),
        "iters": 6,
        "batch_size": 4,
        "lr": 1e-3,
        "val_every": 3,
        "ckpt_every": 3,
        "val_fraction": 0.2,
        "show_progress": False,
    }
    options.update(overrides)
    return TrainOptions(**options)


def test_train_writes_bound_weights_a_curve_and_resumes(tiny, tmp_path):
    collect_tiny(tiny, tmp_path / "data", images=6)
    result = train(tiny, tiny_options(tmp_path))
    meta = read_metadata(tmp_path / "w.safetensors")
    assert meta["base_fingerprint"] == tiny.fingerprint() and meta["train_steps"] == "4"
    assert json.loads(meta["iters"]) == 6
    net, _ = load_shortcut(tmp_path / "w.safetensors", tiny)
    assert isinstance(net, ShortcutNet)
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("iter,lr,train_loss,val_mse") and [r.split(",")[0] for r in rows[1:]] == [
        "3",
        "6",
    ]
    assert result["val_mse"] > 0 and -1 <= result["val_cos"] <= 1
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny, tiny_options(tmp_path))
    train(tiny, tiny_options(tmp_path, iters=9, resume=True))
    rows = (tmp_path / "curve.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "6", "9"]
    assert json.loads(read_metadata(tmp_path / "w.safetensors")["iters"]) == 9


def test_zero_init_starts_from_the_identity(tiny, tmp_path):
    collect_tiny(tiny, tmp_path / "data", images=3)
    train(tiny, tiny_options(tmp_path, iters=1, lr=0.0, zero_init=True))
    net, _ = load_shortcut(tmp_path / "w.safetensors", tiny)
    feats, ids, pos, t = net_inputs(tiny)
    assert torch.equal(net(feats, ids, pos, t), feats)


def test_train_refuses_trajectories_of_another_model(tiny, tmp_path, capsys):
    collect_tiny(tiny, tmp_path / "data", images=3)
    other = tiny_maskgit(1, with_vqgan=False)
    with pytest.raises(ValueError, match="fingerprint"):
        train(other, tiny_options(tmp_path))
    # the command prints one line and exits with status 2
    assert train_cmd.main(["--data", str(tmp_path / "data"), "--no-progress"], model=other) == 2
    err = capsys.readouterr().err
    assert err.startswith("shortcut train: error:") and other.fingerprint() in err


def test_no_cross_attention_training_and_cli_flags(tiny, tmp_path):
    collect_tiny(tiny, tmp_path / "data", images=4)
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "nc.safetensors"), "--iters", "2",
            "--batch-size", "2", "--val-every", "2", "--curve", str(tmp_path / "c.csv"), "--no-cross-attention",
            "--no-progress", "--work", str(tmp_path / "w")]  # fmt: skip
    assert train_cmd.main(argv, model=tiny) == 0
    net, _ = load_shortcut(tmp_path / "nc.safetensors", tiny)
    assert net.config.no_cross_attention


def test_commands_are_registered_under_shortcut():
    parser = argparse.ArgumentParser(prog="migm-bench")
    register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shortcut", "collect", "--images", "3", "--steps", "16"])
    assert args.func is collect_cmd.run and args.images == 3 and args.model == "fashion"
    args = parser.parse_args(["shortcut", "train", "--data", "d", "--ratio", "4", "--no-cross-attention"])
    assert args.func is train_cmd.run
    assert train_cmd.options_from_args(args).net == ShortcutNetConfig(ratio=4.0, no_cross_attention=True)


# ------------------------------------------------------------------------------ DDP
LAUNCHER = """
import sys
from base_models.maskgit.testing import tiny_maskgit
from accelerators.shortcut import {module}
sys.exit({module}.main(sys.argv[1:], model=tiny_maskgit(0, with_vqgan=False)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path: Path, module: str, *args: str) -> None:
    script = tmp_path / f"launch_{module}.py"
    script.write_text(textwrap.dedent(LAUNCHER.format(module=module)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(script), *args]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_collect_and_train_with_two_processes(tiny, tmp_path):
    data = tmp_path / "data"
    torchrun(tmp_path, "collect", "--images", "6", "--steps", "4", "--batch-size", "2", "--shard-size", "2",
             "--out", str(data), "--no-progress")  # fmt: skip
    assert sorted(p.name for p in data.glob("shard-*.safetensors")) == [
        f"shard-0000{i}.safetensors" for i in range(3)
    ]
    # two ranks wrote the same data a single process would have
    single = tmp_path / "single"
    collect_tiny(tiny, single, images=6)
    for shard in single.glob("shard-*.safetensors"):
        with safe_open(str(shard), "pt") as a, safe_open(str(data / shard.name), "pt") as b:
            assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
    torchrun(tmp_path, "train", "--data", str(data), "--out", str(tmp_path / "w.safetensors"), "--iters", "4",
             "--batch-size", "2", "--val-every", "2", "--val-fraction", "0.34", "--curve", str(tmp_path / "c.csv"),
             "--no-progress")  # fmt: skip
    assert read_metadata(tmp_path / "w.safetensors")["base_fingerprint"] == tiny.fingerprint()
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 3


def test_speedup_limit_and_cost_measurement():
    from accelerators.shortcut.cost import measure_cost, speedup_limit
    from accelerators.shortcut.model import ShortcutNet
    from base_models.maskgit.testing import tiny_maskgit

    assert speedup_limit(16, 16, 0.3) == 1.0  # all steps full: no speed-up
    assert speedup_limit(16, 4, 0.0) == 4.0  # free shortcut: N / B
    assert abs(speedup_limit(32, 6, 0.05) - 32 / (6 + 26 * 0.05)) < 1e-12
    model = tiny_maskgit(0, grid=8, depth=6)
    net = ShortcutNet.for_model(model).eval()
    res = measure_cost(model, net, rows=4, replicates=1)
    assert res["base_flops"] > res["shortcut_flops"] > 0
    assert 0 < res["c_flops"] < 1 and res["c_latency"] > 0


def test_cost_latency_is_the_median_of_paired_interleaved_ratios(monkeypatch):
    """c in latency pairs replicate j of the shortcut with replicate j of the base forward (timed
    back to back, as the loop's speed-ups pair rounds), not the ratio of two medians."""
    from accelerators.shortcut import cost, step_cost
    from base_models.maskgit.testing import tiny_maskgit

    seen = {}

    def fake_replicates(calls, device, replicates, warmup):
        seen["calls"] = sorted(calls)
        for fn in calls.values():
            fn()  # the real calls still run (shapes checked)
        # paired ratios shortcut / base 0.1, 0.2, 0.03; net / blocks 0.5, 0.25, 0.04
        return {"base": [10, 10, 100], "shortcut": [1, 2, 3], "blocks": [8, 8, 75], "net": [4, 2, 3]}

    monkeypatch.setattr(step_cost, "interleaved_replicates", fake_replicates)
    model = tiny_maskgit(0, grid=4, depth=2)
    res = cost.measure_cost(model, ShortcutNet.for_model(model).eval(), rows=2, replicates=3)
    assert seen["calls"] == ["base", "blocks", "net", "shortcut"]
    assert res["c_latency"] == pytest.approx(0.1)  # the median of the ratios (ratio of medians: 0.2)
    assert res["net_only_ratio_latency"] == pytest.approx(0.25)  # ratio of medians: 3 / 8
    assert res["net_latency_s"] == pytest.approx(3 / 1e9 / 2)
    assert res["base_latency_s"] == pytest.approx(10 / 1e9 / 2)  # median per call, per row


def test_shortcut_tag_always_names_the_budget():
    from accelerators.shortcut.accelerator import ShortcutConfig
    from bench.config import config_tag

    assert config_tag(ShortcutConfig(steps=16)) == "steps=16,budget=6"
    assert (
        config_tag(ShortcutConfig(steps=32, budget=8, variant="nocross"))
        == "steps=32,budget=8,variant=nocross"
    )


# ------------------------------------------- reference rules (issue 9, items 1 and 6)
def _hand_attention(attn, queries, context):
    """Multi-head attention written out from the reference's rule (packed in-projection,
    softmax(q k^T / sqrt(d_head)) v, out-projection) with the module's own parameters."""
    d, heads = queries.shape[-1], attn.heads
    w, b = attn.in_proj.weight, attn.in_proj.bias
    q = queries @ w[:d].T + b[:d]
    k = context @ w[d : 2 * d].T + b[d : 2 * d]
    v = context @ w[2 * d :].T + b[2 * d :]
    out = []
    for h in range(heads):
        sl = slice(h * d // heads, (h + 1) * d // heads)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d // heads)
        out.append(torch.softmax(scores, dim=-1) @ v[..., sl])
    return torch.cat(out, dim=-1) @ attn.out_proj.weight.T + attn.out_proj.bias


def _hand_ff(ff, x):
    lin1, lin2 = ff[0], ff[3]
    return torch.nn.functional.gelu(x @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias


def _hand_ln(norm, x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _hand_block(block, x, tokens, normalized_kv=False):
    """MIGM-Shortcut ``ShortcutAttnBlock.forward`` (MaskGIT-Shortcut/Network/shortcut_model.py):
    ``PreNorm`` normalises only its first argument, so the cross-attention's keys/values are the
    raw tokens and the self-attention's (``self_attn(x, key=x, value=x)``) the raw features."""
    h = _hand_ln(block.norm1, x)
    if tokens is not None:
        kv = tokens
    else:
        kv = h if normalized_kv else x
    x = x + _hand_attention(block.attn1, h, kv)
    x = x + _hand_ff(block.ff1, _hand_ln(block.norm2, x))
    h = _hand_ln(block.norm3, x)
    x = x + _hand_attention(block.attn2, h, h if normalized_kv else x)
    return x + _hand_ff(block.ff2, _hand_ln(block.norm4, x))


def _block_and_inputs(cross: bool, normalized_self_kv: bool = False):
    from accelerators.shortcut.model import ShortcutBlock

    with torch.random.fork_rng():
        torch.manual_seed(3)
        block = ShortcutBlock(8, 2, 16, 0.0, cross, normalized_self_kv).eval()
        for p in block.parameters():  # non-trivial LayerNorm affine too
            p.data.add_(0.3 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(2, 5, 8, generator=g) + 1.5  # far from normalised: LN matters
    tokens = torch.randn(2, 3, 8, generator=g) if cross else None
    return block, x, tokens


@pytest.mark.parametrize("cross", [True, False])
def test_self_attention_keys_values_are_the_raw_features_as_in_the_reference(cross):
    block, x, tokens = _block_and_inputs(cross)
    with torch.no_grad():
        got = block(x, tokens, None)
        expected = _hand_block(block, x, tokens)
        old_rule = _hand_block(block, x, tokens, normalized_kv=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - old_rule).abs().max() > 1e-2  # the inputs tell the two rules apart


@pytest.mark.parametrize("cross", [True, False])
def test_normalized_self_kv_option_is_the_old_variant(cross):
    block, x, tokens = _block_and_inputs(cross, normalized_self_kv=True)
    with torch.no_grad():
        got = block(x, tokens, None)
        old = _hand_block(block, x, tokens, normalized_kv=True)
        torch.testing.assert_close(got, old, atol=1e-5, rtol=1e-5)
        assert (got - _hand_block(block, x, tokens)).abs().max() > 1e-2


def test_normalized_self_kv_is_off_by_default_and_reaches_every_block(tiny):
    assert ShortcutNetConfig().normalized_self_kv is False
    net = random_net(tiny, num_blocks=2, normalized_self_kv=True)
    assert all(b.normalized_self_kv for b in net.blocks)
    assert not any(b.normalized_self_kv for b in random_net(tiny, num_blocks=2).blocks)


def test_loss_is_a_mean_per_image_then_over_the_batch():
    """Reference (MaskGIT-Shortcut/train_shortcut.py): one image per GPU, ``F.mse_loss`` over
    its masked positions, DDP averages the per-GPU losses. Image 0: one masked position with
    squared errors (1, 1) -> 1. Image 1: three masked positions with squared errors
    (4, 4), (0, 0), (16, 0) -> 24 / 6 = 4. Per image: (1 + 4) / 2 = 2.5;
    pooled: (2 + 24) / 8 = 3.25."""
    pred = torch.zeros(2, 4, 2)
    target = torch.tensor(
        [
            [[1.0, -1.0], [9.0, 9.0], [9.0, 9.0], [9.0, 9.0]],
            [[2.0, 2.0], [0.0, 0.0], [4.0, 0.0], [7.0, 7.0]],
        ]
    )
    mask = torch.tensor([[True, False, False, False], [True, True, True, False]])
    assert masked_mse(pred, target, mask).item() == pytest.approx(2.5)
    assert masked_mse(pred, target, mask, "per-image").item() == pytest.approx(2.5)
    assert masked_mse(pred, target, mask, "pooled").item() == pytest.approx(3.25)
    # an image with nothing masked adds 0 to the per-image mean (and nothing to the pooled one)
    mask3 = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)])
    pred3, target3 = torch.zeros(3, 4, 2), torch.cat([target, torch.ones(1, 4, 2)])
    assert masked_mse(pred3, target3, mask3).item() == pytest.approx(5.0 / 3)
    assert masked_mse(pred3, target3, mask3, "pooled").item() == pytest.approx(3.25)
    with pytest.raises(ValueError, match="unknown loss reduction 'sum'"):
        masked_mse(pred, target, mask, "sum")


def test_loss_reduction_option_defaults_to_the_reference():
    assert TrainOptions(data="").loss_reduction == "per-image"
    with pytest.raises(ValueError, match="unknown loss reduction"):
        TrainOptions(data="", loss_reduction="mean")
    parser = train_cmd.add_arguments(argparse.ArgumentParser())
    assert train_cmd.options_from_args(parser.parse_args(["--data", "d"])).loss_reduction == "per-image"
    args = parser.parse_args(["--data", "d", "--loss-reduction", "pooled"])
    assert train_cmd.options_from_args(args).loss_reduction == "pooled"
