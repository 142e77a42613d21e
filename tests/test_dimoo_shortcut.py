"""DiMOO-Shortcut (accelerators.shortcut.dimoo_model / dimoo_weights) as a standalone network.

Rules pinned from Kaiwen-Zhu/MIGM-Shortcut ``DiMOO-Shortcut/model/shortcut_model.py`` and
``generators/image_generation_generator.py``: shapes, masks really applied, rotary at absolute
positions (relative property, one attention by hand), the cost at Lumina-DiMOO's real shapes
against ``base_models.dimoo.flops``, and strict safetensors weights.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from accelerators.shortcut.dimoo_model import (
    DiMOOShortcutConfig,
    DiMOOShortcutNet,
    KeyTokens,
    call_flops,
    cross_attention_inputs,
    image_code_logits,
)
from accelerators.shortcut.dimoo_weights import load_dimoo_shortcut, save_dimoo_shortcut
from accelerators.shortcut.weights import ShortcutWeightsError, save_shortcut
from base_models.dimoo.config import config_from_dict
from base_models.dimoo.flops import (
    DIMOO_8B,
    DIMOO_CODEBOOK,
    base_forward_flops,
    dimoo_seq_len,
    shortcut_flops,
)
from base_models.dimoo.llada import LLaDAModel
from base_models.dimoo.testing import TINY_CONFIG
from base_models.dimoo.text import SpecialIds, build_batch

# tiny: D = 32 -> d = 16, 4 heads of 4, 2 kv heads (GQA), MLP 48
TINY = DiMOOShortcutConfig(base_dim=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, rope_theta=10000.0)


def _net(cfg: DiMOOShortcutConfig = TINY, seed: int = 0) -> DiMOOShortcutNet:
    torch.manual_seed(seed)
    net = DiMOOShortcutNet(cfg).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: make them matter
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") or name == "ln_f.weight":
                p.uniform_(0.5, 1.5)
    return net


def _inputs(b=2, L=9, K=4, D=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, L, D, generator=g)
    pos = torch.arange(L).expand(b, L).clone()
    keys = torch.randn(b, K, D, generator=g)
    key_pos = torch.stack([torch.randperm(L, generator=g)[:K] for _ in range(b)])
    t = torch.rand(b, generator=g)
    return feats, pos, t, keys, key_pos


# ------------------------------------------------------------------ config
def test_default_config_is_the_reference_on_lumina_dimoo_8b():
    cfg = DiMOOShortcutConfig()
    assert (cfg.inner_dim, cfg.head_dim, cfg.n_block, cfg.embed_t, cfg.cross_attention) == (
        2048,
        64,
        1,
        True,
        True,
    )
    base = DIMOO_8B  # the base model's shape, copied except d_model (reference: copy.copy(config))
    assert (cfg.base_dim, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size) == (
        base.d_model, base.n_heads, base.kv_heads, base.hidden_size)  # fmt: skip
    assert (cfg.rope_theta, cfg.rms_norm_eps) == (base.rope_theta, base.rms_norm_eps)


def test_config_round_trips_and_rejects_bad_shapes():
    assert DiMOOShortcutConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(ValueError, match="unknown"):
        DiMOOShortcutConfig.from_json('{"width": 3}')
    with pytest.raises(ValueError, match="heads"):
        DiMOOShortcutConfig(base_dim=32, n_heads=3, n_kv_heads=1)
    with pytest.raises(ValueError, match="n_kv_heads"):
        DiMOOShortcutConfig(base_dim=32, n_heads=4, n_kv_heads=3)


def test_parameter_names_are_the_references():
    names = set(_net().state_dict())
    for want in ("proj_in.weight", "proj_out.bias", "new_token_proj_in.weight", "ln_f.weight",
                 "blocks.0.cross_attn.q_proj.weight", "blocks.0.cross_attn.attn_norm.weight",
                 "blocks.0.self_attn.up_proj.weight", "blocks.0.self_attn.ff_out.weight",
                 "time_embedder.mlp.0.weight", "time_embedder.mlp.2.bias", "adaLN_modulation.weight"):  # fmt: skip
        assert want in names
    assert not any("bias" in n for n in names if ".cross_attn." in n or ".self_attn." in n)  # no biases
    assert _net().state_dict()["blocks.0.cross_attn.k_proj.weight"].shape == (2 * 4, 16)  # GQA


# ------------------------------------------------------------------ shapes and inputs
# no bottleneck, no GQA, two block pairs, no adaLN
PLAIN = DiMOOShortcutConfig(
    base_dim=32, n_heads=4, n_kv_heads=4, mlp_hidden_size=40, bottleneck_ratio=1, n_block=2, embed_t=False
)


@pytest.mark.parametrize("cfg", [TINY, PLAIN])
def test_output_shape(cfg):
    feats, pos, t, keys, key_pos = _inputs()
    with torch.no_grad():
        out = _net(cfg)(feats, pos, t, keys, key_pos)
    assert out.shape == feats.shape and torch.isfinite(out).all()


def test_runs_in_bfloat16():
    """bfloat16 weights and features (the GPU setting) with a float32 mask ratio."""
    feats, pos, t, keys, key_pos = _inputs()
    net = _net().to(torch.bfloat16)
    with torch.no_grad():
        out = net(feats.bfloat16(), pos, t, keys.bfloat16(), key_pos)
        ref = _net()(feats, pos, t, keys, key_pos)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.1)


def test_inputs_matter():
    """The key tokens, the mask ratio and the features each change the prediction."""
    net = _net()
    feats, pos, t, keys, key_pos = _inputs()
    with torch.no_grad():
        out = net(feats, pos, t, keys, key_pos)
        assert not torch.allclose(out, net(feats, pos, t, keys + 1, key_pos))
        assert not torch.allclose(out, net(feats, pos, 1 - t, keys, key_pos))
        assert not torch.allclose(out - feats, net(2 * feats, pos, t, keys, key_pos) - 2 * feats)


def test_no_cross_attention_ablation_ignores_the_tokens():
    net = _net(
        DiMOOShortcutConfig(base_dim=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=48, cross_attention=False)
    )
    feats, pos, t, keys, key_pos = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(net(feats, pos, t, keys, key_pos), net(feats, pos, t, None, None))
    with pytest.raises(ValueError, match="key tokens"):
        _net()(feats, pos, t)


def test_cross_attention_inputs_packs_keys_in_sequence_order():
    ids = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])  # second row left-padded by two
    is_key = torch.tensor([[False, True, False, True, True], [False, False, True, False, False]])
    table = torch.arange(30.0)[:, None].expand(30, 2)
    keys, key_pos, valid = cross_attention_inputs(ids, pos, is_key, lambda i: table[i])
    assert keys[..., 0].tolist() == [[11, 13, 14], [22, 20, 21]]  # padding after the keys
    assert key_pos[0].tolist() == [1, 3, 4] and key_pos[1, 0].item() == 0
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_image_code_logits_are_the_heads_image_rows():
    head = torch.randn(10, 6)  # 6 text rows, 4 image codes: offset = width - codebook = 6
    f = torch.randn(2, 3, 6)
    torch.testing.assert_close(image_code_logits(f, head, 4), (f @ head.t())[..., 6:])
    with pytest.raises(ValueError, match="codebook"):
        image_code_logits(f, head, 11)


# ------------------------------------------------------------------ masks
def test_padded_keys_do_not_change_the_output():
    net = _net()
    feats, pos, t, keys, key_pos = _inputs(K=5)
    valid = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    other = keys.clone()
    other[0, 3:] = torch.randn(2, 32) * 5
    moved = key_pos.clone()
    moved[0, 3:] = torch.tensor([0, 8])
    with torch.no_grad():
        out = net(feats, pos, t, keys, key_pos, valid)
        torch.testing.assert_close(net(feats, pos, t, other, moved, valid), out)
        # the check can fail: without the mask the same change moves the output
        assert not torch.allclose(net(feats, pos, t, other, moved), net(feats, pos, t, keys, key_pos))


def test_padded_prompt_token_does_not_change_the_output():
    """Two prompts of different lengths, left-padded (``build_batch``): the pad token's id and
    feature never reach a real row, neither through the self-attention nor as a key."""
    ids = SpecialIds(mask=90, newline=91, boa=92, eoa=93, boi=94, eoi=95, uncondition=96)
    b = build_batch([[1, 2, 3, 4, 5], [6, 7]], 2, 3, ids)
    table = torch.randn(100, 32)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(*b.ids.shape, 32, generator=g)
    is_key = b.key_mask.clone()
    is_key[:, -12:] = False  # keys: prompt and specials before the image part, say
    net = _net()

    def run(ids, feats):
        keys, key_pos, key_valid = cross_attention_inputs(
            ids, b.positions, is_key & b.key_mask, lambda i: table[i]
        )
        with torch.no_grad():
            return net(feats, b.positions, torch.tensor([0.5, 0.5]), keys, key_pos, key_valid, b.key_mask)

    out = run(b.ids, feats)
    ids2, feats2 = b.ids.clone(), feats.clone()
    ids2[1, :3], feats2[1, :3] = 50, 7.0  # the three pad positions of the short prompt
    torch.testing.assert_close(run(ids2, feats2)[b.key_mask], out[b.key_mask])


def test_batch_equals_streams_run_alone():
    """Streams of different lengths and key counts, padded into one batch, give what each gives
    alone (rows compared where real)."""
    net = _net()
    g = torch.Generator().manual_seed(2)
    lens, nkeys = (7, 10), (2, 5)
    L, K = max(lens), max(nkeys)
    feats, keys = torch.randn(2, L, 32, generator=g), torch.randn(2, K, 32, generator=g)
    pos = torch.zeros(2, L, dtype=torch.long)
    valid = torch.zeros(2, L, dtype=torch.bool)
    key_pos = torch.zeros(2, K, dtype=torch.long)
    key_valid = torch.zeros(2, K, dtype=torch.bool)
    for i, (n, k) in enumerate(zip(lens, nkeys)):
        pos[i, L - n :], valid[i, L - n :] = torch.arange(n), True  # left padding, as build_batch
        key_pos[i, :k], key_valid[i, :k] = torch.randperm(n, generator=g)[:k], True
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        both = net(feats, pos, t, keys, key_pos, key_valid, valid)
        for i, (n, k) in enumerate(zip(lens, nkeys)):
            alone = net(feats[i : i + 1, L - n :], pos[i : i + 1, L - n :], t[i : i + 1],
                        keys[i : i + 1, :k], key_pos[i : i + 1, :k])  # fmt: skip
            torch.testing.assert_close(both[i, L - n :], alone[0], rtol=1e-5, atol=1e-5)


def test_a_row_without_keys_gets_no_cross_attention():
    net = _net()
    feats, pos, t, keys, key_pos = _inputs()
    none = torch.zeros(2, 4, dtype=torch.bool)
    none[1] = True
    blk = net.blocks[0].cross_attn
    with torch.no_grad():
        x = net.proj_in(feats)
        branch = blk.attention(x, pos, None, KeyTokens(net.new_token_proj_in(keys), key_pos, none))
        assert torch.equal(branch[0], torch.zeros_like(branch[0])) and branch[1].abs().sum() > 0
        assert torch.isfinite(net(feats, pos, t, keys, key_pos, none)).all()


# ------------------------------------------------------------------ rotary
def test_shifting_every_position_leaves_the_output_unchanged():
    """Queries and keys are both rotated at their absolute positions (reference
    ``RotaryEmbedding4CrossAttn``; the self-attention rotates both too), so only offsets count."""
    net = _net()
    feats, pos, t, keys, key_pos = _inputs()
    with torch.no_grad():
        out = net(feats, pos, t, keys, key_pos)
        torch.testing.assert_close(net(feats, pos + 37, t, keys, key_pos + 37), out, rtol=1e-4, atol=1e-4)
        # ... and rotary is really there: moving the keys alone, or the rows alone, changes it
        assert not torch.allclose(net(feats, pos, t, keys, key_pos + 3), out, atol=1e-3)
        assert not torch.allclose(net(feats, pos + 3, t, keys, key_pos), out, atol=1e-3)


def _rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _rotate_by_hand(x, positions, theta):
    """x (H, n, Dh) rotated pairwise (i, i + Dh/2) by angle position * theta^(-2i/Dh)."""
    dh = x.shape[-1]
    half = dh // 2
    out = torch.empty_like(x)
    for row, p in enumerate(positions.tolist()):
        for i in range(half):
            a = p * theta ** (-2 * i / dh)
            c, s = math.cos(a), math.sin(a)
            x1, x2 = x[:, row, i], x[:, row, i + half]
            out[:, row, i], out[:, row, i + half] = x1 * c - x2 * s, x2 * c + x1 * s
    return out


def test_one_cross_attention_by_hand():
    """Block 0's cross-attention branch from the module's own weights with plain torch ops: RMSNorm
    of both inputs with the same attn_norm, projections, pairwise rotation at the absolute
    positions, kv head j serving query heads 2j and 2j + 1, softmax(q k^T / sqrt(Dh)) v, attn_out."""
    net = _net()
    blk = net.blocks[0].cross_attn
    g = torch.Generator().manual_seed(3)
    x, src = torch.randn(1, 3, 16, generator=g), torch.randn(1, 2, 16, generator=g)
    qpos, kpos = torch.tensor([[5, 6, 9]]), torch.tensor([[2, 7]])
    eps, theta = TINY.rms_norm_eps, TINY.rope_theta
    with torch.no_grad():
        got = blk.attention(x, qpos, None, KeyTokens(src, kpos))[0]
        w = blk.attn_norm.weight
        hx, hs = _rms(x[0], w, eps), _rms(src[0], w, eps)
        q = (hx @ blk.q_proj.weight.t()).view(3, 4, 4).transpose(0, 1)  # (H, 3, Dh)
        k = (hs @ blk.k_proj.weight.t()).view(2, 2, 4).transpose(0, 1)  # (Hkv, 2, Dh)
        v = (hs @ blk.v_proj.weight.t()).view(2, 2, 4).transpose(0, 1)
        q, k = _rotate_by_hand(q, qpos[0], theta), _rotate_by_hand(k, kpos[0], theta)
        heads = []
        for h in range(4):
            scores = q[h] @ k[h // 2].t() / 2.0  # sqrt(Dh) = 2
            heads.append(torch.softmax(scores, dim=-1) @ v[h // 2])  # (3, Dh)
        want = torch.cat(heads, dim=-1) @ blk.attn_out.weight.t()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ on the tiny DiMOO base model
def test_runs_on_the_tiny_dimoo_transformer():
    """Features, embeddings and head of a real (tiny, random) LLaDA model fit the network."""
    cfg = config_from_dict(TINY_CONFIG)
    torch.manual_seed(0)
    base = LLaDAModel(cfg).eval()
    sc = DiMOOShortcutConfig(base_dim=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.kv_heads,
                             mlp_hidden_size=cfg.hidden_size, rope_theta=cfg.rope_theta)  # fmt: skip
    ids = SpecialIds(mask=90, newline=91, boa=92, eoa=93, boi=94, eoi=95, uncondition=90)
    b = build_batch([[1, 2, 3, 4], [5, 6]], 2, 3, ids)
    with torch.no_grad():
        feats = base(b.ids, b.positions, b.key_mask)  # (B, L, D)
        is_key = b.key_mask.clone()
        is_key[:, -14:] = False  # the prompt as keys (no token revealed yet)
        keys, key_pos, key_valid = cross_attention_inputs(b.ids, b.positions, is_key, base.embed)
        out = _net(sc)(feats, b.positions, torch.tensor([1.0, 1.0]), keys, key_pos, key_valid, b.key_mask)
        logits = image_code_logits(out[:, b.image_pos[0]], base.head_weight, 16)
    assert logits.shape == (2, 6, 16) and torch.isfinite(logits).all()


# ------------------------------------------------------------------ cost
def test_call_flops_on_meta_match_the_analytic_count():
    cfg = config_from_dict(TINY_CONFIG)
    sc = DiMOOShortcutConfig(base_dim=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.kv_heads,
                             mlp_hidden_size=cfg.hidden_size)  # fmt: skip
    assert call_flops(sc, 20, 6) == shortcut_flops(cfg, 20, 6)
    ablation = DiMOOShortcutConfig(**{**sc.__dict__, "cross_attention": False, "n_block": 2})
    assert call_flops(ablation, 20, 6) == shortcut_flops(cfg, 20, 6, n_block=2, cross_attention=False)


def test_cost_at_lumina_dimoo_real_shapes():
    """1024x1024 (64 x 64 codes + 64 newlines), a 100-token prompt, 64 steps: K = 4096 / 64
    revealed tokens + the prompt. The network alone is ~2.6% of the base blocks, ~3.0% of a base
    forward with the image head on both sides (a shortcut step still needs the head)."""
    seq, p = dimoo_seq_len(100)
    k = p // 64 + 100
    net = call_flops(DiMOOShortcutConfig(), seq, k)
    assert net == shortcut_flops(DIMOO_8B, seq, k)
    base = base_forward_flops(DIMOO_8B, seq, p, DIMOO_CODEBOOK)
    alone = net / base.blocks
    with_head = (net + base.head_image) / (base.blocks + base.head_image)
    assert round(alone, 4) == 0.0261 and round(with_head, 4) == 0.0300


# ------------------------------------------------------------------ weights
def test_weights_round_trip(tmp_path):
    net = _net(seed=4)
    path = save_dimoo_shortcut(tmp_path / "w.safetensors", net, base_fingerprint="abc", extra={"iters": 3})
    loaded, meta = load_dimoo_shortcut(path, expected_fingerprint="abc")
    assert loaded.config == TINY and meta["iters"] == "3" and not loaded.training
    feats, pos, t, keys, key_pos = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats, pos, t, keys, key_pos), net(feats, pos, t, keys, key_pos))


def test_weights_with_wrong_keys_are_rejected(tmp_path):
    path = save_dimoo_shortcut(tmp_path / "w.safetensors", _net())
    state = load_file(path)
    meta = {"format": "migm-bench-dimoo-shortcut", "version": "1", "net_config": TINY.to_json()}
    extra = dict(state, **{"blocks.0.extra.weight": torch.zeros(1)})
    save_file(extra, str(tmp_path / "extra.safetensors"), metadata=meta)
    with pytest.raises(
        ShortcutWeightsError, match=r"extra\.safetensors.*unexpected \['blocks\.0\.extra\.weight'\]"
    ):
        load_dimoo_shortcut(tmp_path / "extra.safetensors")
    missing = {k: v for k, v in state.items() if k != "ln_f.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(ShortcutWeightsError, match=r"missing \['ln_f\.weight'\]"):
        load_dimoo_shortcut(tmp_path / "missing.safetensors")
    state["ln_f.weight"] = torch.ones(3)
    save_file(state, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(ShortcutWeightsError, match=r"shape\.safetensors.*ln_f\.weight"):
        load_dimoo_shortcut(tmp_path / "shape.safetensors")


def test_weights_bound_to_another_base_or_format_are_rejected(tmp_path):
    path = save_dimoo_shortcut(tmp_path / "w.safetensors", _net(), base_fingerprint="abc")
    with pytest.raises(ShortcutWeightsError, match="fingerprint abc.*fingerprint xyz"):
        load_dimoo_shortcut(path, expected_fingerprint="xyz")
    save_file(
        {"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "migm-bench-shortcut"}
    )
    with pytest.raises(ShortcutWeightsError, match="other.safetensors.*migm-bench-dimoo-shortcut"):
        load_dimoo_shortcut(tmp_path / "other.safetensors")


def test_maskgit_shortcut_files_still_save_and_load_strictly(tmp_path):
    """``weights.py`` now shares its writer and strict loader with the DiMOO files."""
    from accelerators.shortcut.model import ShortcutNet, ShortcutNetConfig
    from accelerators.shortcut.weights import load_strict, read_tensors

    net = ShortcutNet(ShortcutNetConfig(heads=2), 8, torch.randn(5, 8), torch.randn(3, 8))

    class Model:
        name = "toy"

        def fingerprint(self):
            return "f"

    path = save_shortcut(tmp_path / "m.safetensors", net, Model(), 1)
    state = read_tensors(path)
    assert set(state) == set(net.state_dict())
    with pytest.raises(ShortcutWeightsError, match=r"m\.safetensors.*missing"):
        load_strict(net, {k: v for k, v in state.items() if k != "proj_in.weight"}, path)
    assert F.mse_loss(state["proj_in.weight"], net.state_dict()["proj_in.weight"]) == 0
