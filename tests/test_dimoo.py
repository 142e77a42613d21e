"""Lumina-DiMOO components on a tiny random checkpoint folder in the public layout.

Rules are pinned with expected values written from the reference (Alpha-VLLM/Lumina-DiMOO
``model/modeling_llada.py``, ``generators/image_generation_generator.py``,
``utils/generation_utils.py``, ``utils/image_utils.py``); tokenizer and decoder tests need the
``tokenizers`` / ``diffusers`` packages and skip without them.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from base_models.dimoo import sampler
from base_models.dimoo.checkpoint import CheckpointError, load_transformer
from base_models.dimoo.config import ConfigError, config_from_dict, read_config
from base_models.dimoo.flops import (
    DIMOO_8B,
    base_forward_flops,
    block_flops,
    dimoo_cost_table,
    shortcut_flops,
)
from base_models.dimoo.llada import LLaDABlock, LLaDAModel, RMSNorm, apply_rotary, rotary_angles, rotate_half
from base_models.dimoo.testing import CODEBOOK, TINY_CONFIG, write_tiny_checkpoint
from base_models.dimoo.text import (
    SPECIAL_TOKENS,
    SpecialIds,
    build_batch,
    grid_of,
    image_part,
    image_positions,
)
from bench.flops import count_flops

IDS = SpecialIds(mask=90, newline=91, boa=92, eoa=93, boi=94, eoi=95, uncondition=96)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Single-file weights, no tokenizer / decoder (those tests build their own)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("dimoo"), tokenizer=False, vqvae=False)


@pytest.fixture(scope="module")
def model(folder) -> LLaDAModel:
    return load_transformer(folder)


# ------------------------------------------------------------------ config + loading
def test_config_fields_come_from_config_json(folder):
    cfg = read_config(folder)
    assert (cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.n_layers, cfg.hidden_size) == (32, 4, 2, 2, 48)
    assert cfg.rope_theta == 500000.0 and cfg.table_size == 96 and not cfg.weight_tying


@pytest.mark.parametrize(
    "field,value",
    [("block_type", "sequential"), ("activation_type", "swiglu"), ("include_bias", True), ("rope", False),
     ("layer_norm_type", "default"), ("attention_layer_norm", True)],
)  # fmt: skip
def test_config_rejects_other_architectures(field, value):
    with pytest.raises(ConfigError, match=f"x.json: {field}={value!r} is not supported"):
        config_from_dict({**TINY_CONFIG, field: value}, "x.json")


def test_config_rejects_bad_shapes(tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of n_kv_heads=3"):
        config_from_dict({**TINY_CONFIG, "n_kv_heads": 3})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_config(tmp_path)


def test_loading_round_trip_single_and_sharded(folder, model, tmp_path):
    saved = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert "model.transformer.blocks.1.up_proj.weight" in state and "model.transformer.ff_out.weight" in state
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    sharded = write_tiny_checkpoint(tmp_path / "sharded", sharded=True, tokenizer=False, vqvae=False)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    other = load_transformer(sharded)
    assert all(torch.equal(other.state_dict()[k], saved[k]) for k in saved)


def _rewrite(folder, fn):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    fn(state)
    save_file(state, str(path))
    return path


def test_strict_loading_names_file_and_keys(tmp_path):
    f = write_tiny_checkpoint(tmp_path / "a", tokenizer=False, vqvae=False)
    path = _rewrite(f, lambda s: s.pop("model.transformer.blocks.1.up_proj.weight"))
    with pytest.raises(
        CheckpointError, match=rf"{path}: .*missing keys: model.transformer.blocks.1.up_proj.weight"
    ):
        load_transformer(f)
    f = write_tiny_checkpoint(tmp_path / "b", tokenizer=False, vqvae=False)
    _rewrite(f, lambda s: s.update({"model.transformer.blocks.0.q_proj.bias": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match="unexpected keys: model.transformer.blocks.0.q_proj.bias"):
        load_transformer(f)
    f = write_tiny_checkpoint(tmp_path / "c", tokenizer=False, vqvae=False)
    _rewrite(f, lambda s: s.update({"model.transformer.ln_f.weight": torch.ones(31)}))
    with pytest.raises(CheckpointError, match=r"shape mismatches: model.transformer.ln_f.weight \(31,\)"):
        load_transformer(f)
    # weight_tying: the head is the embedding table, so a separate ff_out is unexpected
    f = write_tiny_checkpoint(tmp_path / "d", tokenizer=False, vqvae=False)
    cfg = json.loads((f / "config.json").read_text())
    (f / "config.json").write_text(json.dumps({**cfg, "weight_tying": True}))
    with pytest.raises(CheckpointError, match="unexpected keys: model.transformer.ff_out.weight"):
        load_transformer(f)


def test_sharded_index_errors(tmp_path):
    f = write_tiny_checkpoint(tmp_path / "s", sharded=True, tokenizer=False, vqvae=False)
    (f / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match="names shard model-00002-of-00002.safetensors, which is not in"
    ):
        load_transformer(f)
    (f / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or model.safetensors.index.json"):
        load_transformer(f)


def test_tied_head_uses_embedding_table(tmp_path):
    raw = {**TINY_CONFIG, "weight_tying": True}
    m = LLaDAModel(config_from_dict(raw))
    assert "model.transformer.ff_out.weight" not in m.state_dict()
    assert m.head_weight is m.transformer.wte.weight


# ------------------------------------------------------------------ block pieces
def test_rmsnorm_casts_back_before_the_weight():
    norm = RMSNorm(2, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.5]))
    rms = math.sqrt((9 + 16) / 2)
    torch.testing.assert_close(norm(torch.tensor([[3.0, 4.0]])), torch.tensor([[2 * 3 / rms, 0.5 * 4 / rms]]))
    x = torch.randn(3, 8).to(torch.bfloat16)
    norm = RMSNorm(8, 1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x32 = x.float()
    want = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(norm(x), want) and norm(x).dtype == torch.bfloat16


def test_rotary_matches_reference_table_at_absolute_positions():
    assert torch.equal(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))
    dh, theta, length = 8, 500000.0, 50
    inv = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.float) / dh))
    table = torch.einsum("i , j -> i j", torch.arange(length, dtype=torch.float), inv)
    table = torch.cat((table, table), dim=-1)  # the reference's (L, Dh) angle table
    pos = torch.tensor([[3, 17, 49]])
    sin, cos = rotary_angles(pos, dh, theta)
    assert torch.equal(sin[0, 0], table[pos[0]].sin()) and torch.equal(cos[0, 0], table[pos[0]].cos())
    x = torch.randn(1, 2, 3, dh)
    want = x * table[pos[0]].cos() + rotate_half(x) * table[pos[0]].sin()
    torch.testing.assert_close(apply_rotary(x, sin, cos), want)


def test_swiglu_gate_is_ff_proj():
    blk = LLaDABlock(config_from_dict(TINY_CONFIG))
    h = torch.randn(2, 5, 32)
    x = blk.ff_norm(h)
    want = blk.ff_out(F.silu(blk.ff_proj(x)) * blk.up_proj(x))
    torch.testing.assert_close(blk.mlp(h), want)
    swapped = blk.ff_out(F.silu(blk.up_proj(x)) * blk.ff_proj(x))
    assert not torch.allclose(blk.mlp(h), swapped)


def test_gqa_equals_full_heads_with_repeated_kv():
    """n_kv_heads = 2 of 4: kv head j serves query heads 2j, 2j+1 (reference repeat_interleave)."""
    gqa = LLaDABlock(config_from_dict(TINY_CONFIG))
    full = LLaDABlock(config_from_dict({**TINY_CONFIG, "n_kv_heads": 4}))
    state = gqa.state_dict()
    for name in ("k_proj.weight", "v_proj.weight"):  # (2 * 8, 32) -> (4 * 8, 32)
        state[name] = state[name].view(2, 8, 32).repeat_interleave(2, dim=0).reshape(32, 32)
    full.load_state_dict(state)
    h, pos = torch.randn(1, 6, 32), torch.arange(6)[None]
    torch.testing.assert_close(gqa(h, pos), full(h, pos))


# ------------------------------------------------------------------ forwards
def _sequence(model, n_prompt=5, rows=2, cols=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 40, (n_prompt,), generator=g).tolist()
    b = build_batch([prompt], rows, cols, _ids(model))
    codes = torch.randint(80, 96, (rows * cols,), generator=g)
    revealed = torch.rand(rows * cols, generator=g) < 0.5
    b.ids[0, b.image_pos[0]] = torch.where(revealed, codes, b.ids[0, b.image_pos[0]])
    return b


def _ids(model) -> SpecialIds:
    m = model.cfg.mask_token_id
    return SpecialIds(mask=m, newline=m + 1, boa=m + 2, eoa=m + 3, boi=m + 4, eoi=m + 5, uncondition=m + 6)


def test_partial_forward_equals_full_forward_at_those_rows(model):
    b = _sequence(model)
    with torch.no_grad():
        full, caches = model.forward_cached(b.ids, b.positions, b.key_mask)
        rows = b.image_pos[:, [0, 2, 4, 5]]  # a subset of image rows, against cached K/V
        part = model.forward_rows(b.ids, rows, b.positions, caches, b.key_mask)
        want = torch.gather(full, 1, rows[..., None].expand(-1, -1, full.shape[-1]))
        # SDPA's CPU kernel may round the last bit differently for another query count
        torch.testing.assert_close(part, want, rtol=1e-5, atol=1e-5)
        # q, k, v of the subset (rotary at absolute positions included) are bit-identical
        blk, h = model.blocks[0], model.embed(b.ids)
        q, k, v = blk.qkv(h, b.positions)
        qr, kr, vr = blk.qkv(h[:, rows[0]], b.positions[:, rows[0]])
        assert torch.equal(qr, q[:, :, rows[0]]) and torch.equal(kr, k[:, :, rows[0]])
        assert torch.equal(vr, v[:, :, rows[0]]) and torch.equal(blk.value(h[:, rows[0]]), vr)
        assert torch.equal(full, model(b.ids, b.positions, b.key_mask))
        # rotary really uses the absolute positions: rows at the wrong positions differ
        _, caches = model.forward_cached(b.ids, b.positions, b.key_mask)
        wrong = b.positions.clone()
        wrong[0, rows[0]] = torch.arange(rows.shape[1])
        assert not torch.allclose(model.forward_rows(b.ids, rows, wrong, caches, b.key_mask), want)


def test_padding_mask_batch_equals_each_alone(model):
    ids = _ids(model)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]  # different lengths: left padding on the second
    batch = build_batch(prompts, 2, 3, ids)
    assert batch.key_mask.sum(1).tolist() == [7 + 12, 3 + 12]
    with torch.no_grad():
        both = model(batch.ids, batch.positions, batch.key_mask)
        for i, p in enumerate(prompts):
            alone = build_batch([p], 2, 3, ids)
            one = model(alone.ids, alone.positions, alone.key_mask)
            got = both[i, batch.image_pos[i]]
            want = one[0, alone.image_pos[0]]
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.logits(got), model.logits(want), rtol=1e-5, atol=1e-5)
        unmasked = model(batch.ids, batch.positions)  # the padding mask is really applied
        assert not torch.allclose(unmasked[1, batch.image_pos[1]], both[1, batch.image_pos[1]], atol=1e-3)


def test_image_logits_are_the_last_codebook_rows(model):
    from base_models.dimoo.vqvae import code_offset

    off = code_offset(model.cfg.table_size, CODEBOOK)
    assert off == 80
    f = torch.randn(1, 3, 32)
    torch.testing.assert_close(model.logits(f, slice(off, off + CODEBOOK)), model.logits(f)[..., off:])
    with pytest.raises(ValueError, match="cannot end in a codebook"):
        code_offset(16, 16)


# ------------------------------------------------------------------ layout
def test_sequence_layout_on_a_tiny_example():
    m, nl = IDS.mask, IDS.newline
    assert image_part(2, 3, IDS) == [IDS.boa, IDS.boi, m, m, m, nl, m, m, m, nl, IDS.eoi, IDS.eoa]
    codes = torch.tensor([10, 11, 12, 13, 14, 15])
    assert image_part(2, 3, IDS, codes)[2:10] == [10, 11, 12, nl, 13, 14, 15, nl]
    assert image_positions(3, 2, 3).tolist() == [5, 6, 7, 9, 10, 11]
    b = build_batch([[1, 2, 3], [4, 5, 6, 7, 8]], 2, 3, IDS)
    assert b.ids[0].tolist() == [0, 0, 1, 2, 3, *image_part(2, 3, IDS)]
    assert b.key_mask[0].tolist() == [False, False] + [True] * 15
    assert b.positions[0].tolist() == [0, 0, *range(15)] and b.positions[1].tolist() == list(range(17))
    assert b.image_pos.tolist() == [[7, 8, 9, 11, 12, 13]] * 2
    assert (b.ids.gather(1, b.image_pos) == m).all()
    assert grid_of(1024, 512) == (64, 32)
    with pytest.raises(ValueError, match="multiples of 16"):
        grid_of(1000, 512)


# ------------------------------------------------------------------ sampler policy
def test_keep_schedule_rule():
    # floor(N0 cos(pi/2 (s+1)/T)): 16 cos(pi/8) = 14.78, 16 cos(pi/4) = 11.31, 16 cos(3pi/8) = 6.12
    assert [sampler.keep_count(16, s, 4) for s in range(4)] == [14, 11, 6, 0]
    assert sampler.keep_count(1, 0, 4) == 1  # max(1, floor(0.92))
    # 3 tokens, 8 steps: keep 2, 2, 2, ... but the M - 1 clamp reveals one per step, then 0
    assert sampler.masked_counts(3, 8) == [2, 1, 0, 0, 0, 0, 0, 0]
    assert sampler.reveal_counts(3, 8) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert sampler.reveal_counts(16, 4) == [2, 3, 5, 6] and sum(sampler.reveal_counts(4096, 64)) == 4096
    # DiMOO's default: 1024x1024 (P = 4096), 64 steps
    first = sampler.keep_count(4096, 0, 64)
    assert first == math.floor(4096 * math.cos(math.pi / 128)) == 4094
    with pytest.raises(ValueError, match="outside"):
        sampler.keep_count(4, 4, 4)


def test_cfg_rule():
    got = sampler.cfg_combine(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0]), 4.0)
    assert torch.equal(got, torch.tensor([5 * 1 - 4 * 0.5, 5 * 2 - 4 * 3.0]))


def test_gumbel_and_sampling_rules():
    u = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(7))
    g = -torch.log(-torch.log(u + 1e-20) + 1e-20)
    assert torch.equal(sampler.gumbel((2, 3, 5), torch.Generator().manual_seed(7)), g)
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    got = sampler.sample_tokens(logits, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(got, (logits / 0.5 + g).argmax(-1))
    assert torch.equal(sampler.sample_tokens(logits, 0.0, torch.Generator()), logits.argmax(-1))


def test_remask_rule_on_hand_made_confidences():
    conf = torch.tensor([[0.9, 0.1, 0.5, 0.7]])
    gen = torch.Generator().manual_seed(0)
    # the two lowest stay masked
    assert sampler.remask(2, conf, 0.0, gen).tolist() == [[False, True, True, False]]
    assert sampler.remask(0, conf, 0.0, gen).tolist() == [[False] * 4]  # last step: none
    assert sampler.remask(4, conf, 0.0, gen).tolist() == [[False, True, True, True]]  # k clamped to M - 1
    # with temperature: log conf + temperature * fresh Gumbel noise, lowest kept masked
    g = sampler.gumbel((1, 4), torch.Generator().manual_seed(3))
    score = torch.log(conf) + 2.0 * g
    want = score < score.sort(-1).values[:, 2:3]
    assert torch.equal(sampler.remask(2, conf, 2.0, torch.Generator().manual_seed(3)), want)


def test_step_draws_sampling_then_remask_noise():
    cond, unc = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    sampled, keep = sampler.step(cond, 3, 1.0, torch.Generator().manual_seed(5), unc, 4.0)
    gen = torch.Generator().manual_seed(5)
    logits = 5 * cond - 4 * unc
    want = (logits + sampler.gumbel((1, 6, 8), gen)).argmax(-1)
    conf = torch.softmax(logits, -1).gather(-1, want[..., None]).squeeze(-1)
    score = torch.log(conf) + sampler.gumbel((1, 6), gen)
    assert torch.equal(sampled, want)
    assert torch.equal(keep, score < score.sort(-1).values[:, 3:4]) and keep.sum() == 3


def test_per_row_generators_make_a_batch_equal_runs_of_one():
    logits = torch.randn(2, 5, 7)
    batch = sampler.step(logits, 2, 1.0, [torch.Generator().manual_seed(s) for s in (11, 12)])
    for i, s in enumerate((11, 12)):
        one = sampler.step(logits[i : i + 1], 2, 1.0, torch.Generator().manual_seed(s))
        assert torch.equal(batch[0][i], one[0][0]) and torch.equal(batch[1][i], one[1][0])
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        sampler.step(logits, 2, 1.0, [torch.Generator()] * 3)


# ------------------------------------------------------------------ tokenizer, decoder
def test_tokenizer_special_ids_and_prompts(tmp_path):
    pytest.importorskip("tokenizers")
    from base_models.dimoo.testing import tiny_vocab
    from base_models.dimoo.text import DiMOOTokenizer, TokenizerError, check_known_ids, t2i_prompt

    f = write_tiny_checkpoint(tmp_path / "t", vqvae=False)
    tok = DiMOOTokenizer(f)
    vocab = tiny_vocab()
    assert tok.ids.mask == vocab["<|mdm_mask|>"] == read_config(f).mask_token_id
    assert (tok.ids.boi, tok.ids.eoi, tok.ids.newline) == (
        vocab["<IMAGE>"],
        vocab["</IMAGE>"],
        vocab["<end-of-line>"],
    )
    assert not tok.full_size  # a tiny vocabulary: known ids are not enforced
    ids = tok.prompt_ids("A red cat")
    assert ids[0] == vocab["<system>"] and ids[-1] == vocab["</user>"]
    assert ids[-4:-1] == [vocab["a"], vocab["red"], vocab["cat"]]
    assert tok.uncond_ids()[-3:] == [vocab["<user>"], vocab["<uncondition>"], vocab["</user>"]]
    assert t2i_prompt("x") == "<system>Generate an image according to the text prompt.</system><user>x</user>"
    known = SpecialIds(**{role: i for role, (_, i) in SPECIAL_TOKENS.items()})
    check_known_ids(known)
    with pytest.raises(TokenizerError, match="mask 24 != 126336"):
        check_known_ids(tok.ids)
    with pytest.raises(TokenizerError, match="unconditional prompt tokenises to"):
        check_known_ids(known, [1, 2, 3])
    raw = json.loads((f / "tokenizer.json").read_text())
    raw["added_tokens"] = [t for t in raw["added_tokens"] if t["content"] != "<IMAGE>"]
    del raw["model"]["vocab"]["<IMAGE>"]
    (f / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(TokenizerError, match="has no special token '<IMAGE>'"):
        DiMOOTokenizer(f)


def test_vqvae_decodes_codes_to_unit_range(tmp_path):
    pytest.importorskip("diffusers")
    from base_models.dimoo.vqvae import codebook_size, decode_codes, load_vqvae

    f = write_tiny_checkpoint(tmp_path / "v", tokenizer=False)
    vq = load_vqvae(f)
    assert codebook_size(vq) == CODEBOOK
    img = decode_codes(vq, torch.randint(0, CODEBOOK, (2, 6)), 2, 3)
    assert img.shape == (2, 3, 32, 48) and img.min() >= 0 and img.max() <= 1
    with pytest.raises(ValueError, match=r"image codes must lie in \[0, 16\)"):
        decode_codes(vq, torch.full((1, 6), 16), 2, 3)
    weights = f / "vqvae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop(min(state))
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=rf"{weights}: .*missing keys"):
        load_vqvae(f)


# ------------------------------------------------------------------ FLOPs
def test_base_forward_flops_match_the_counter(model):
    b = _sequence(model)
    seq, p = b.ids.shape[1], b.image_pos.shape[1]
    want = base_forward_flops(model.cfg, seq, p, CODEBOOK)
    off = model.cfg.table_size - CODEBOOK
    with torch.no_grad():
        got_blocks = count_flops(lambda: model(b.ids, b.positions))
        f = torch.randn(1, p, 32)
        got_head = count_flops(lambda: model.logits(f, slice(off, off + CODEBOOK)))
    assert got_blocks == want.blocks and got_head == want.head_image


def test_shortcut_flops_match_the_counter():
    """The DiMOO-Shortcut network's shape (MIGM-Shortcut ``shortcut_model.py``), built from our
    LLaDA blocks at half width with the MLP width kept, counted by torch."""
    cfg = config_from_dict(TINY_CONFIG)
    half = config_from_dict({**TINY_CONFIG, "d_model": 16})  # n_heads, n_kv_heads, mlp kept
    t, k, big = 20, 6, cfg.d_model
    cross, selfb = LLaDABlock(half), LLaDABlock(half)
    proj_in, tok_in, proj_out = torch.nn.Linear(big, 16), torch.nn.Linear(big, 16), torch.nn.Linear(16, big)
    mid = round(math.sqrt(16 * 256))
    temb = torch.nn.Sequential(torch.nn.Linear(256, mid), torch.nn.SiLU(), torch.nn.Linear(mid, 16))
    ada = torch.nn.Linear(16, 32)

    def call():
        x, new = proj_in(torch.randn(1, t, big)), tok_in(torch.randn(1, k, big))
        q = cross._heads(cross.q_proj(cross.attn_norm(x)), 4)
        kk = cross._heads(cross.k_proj(cross.attn_norm(new)), 2)
        vv = cross._heads(cross.v_proj(cross.attn_norm(new)), 2)
        x = x + cross.attend(q, kk, vv)
        x = x + cross.mlp(x)
        x = selfb(x, torch.arange(t)[None])
        scale, shift = ada(temb(torch.randn(1, 256))).chunk(2, -1)
        return proj_out(x * (1 + scale) + shift)

    with torch.no_grad():
        assert count_flops(call) == shortcut_flops(cfg, t, k)


def test_dimoo_real_shape_cost():
    t = dimoo_cost_table(prompt_tokens=64)
    assert (t["seq_len"], t["image_tokens"]) == (64 + 4 + 64 * 65, 4096)
    kv = DIMOO_8B.kv_heads * DIMOO_8B.head_dim
    assert t["base_blocks"] == 32 * block_flops(t["seq_len"], t["seq_len"], 4096, kv, 12288)
    assert 0.02 < t["ratio_network_vs_blocks"] < 0.04  # ~1/38


# ------------------------------------------------------------------ the reference loop, batched
def test_reference_block_formula(model):
    """One block against the reference's own formulation: rotary table over arange(L), k/v
    repeat_interleave, softmax(q k^T / sqrt(Dh)) v, x + attn, then SwiGLU."""
    blk, cfg = model.blocks[0], model.cfg
    h = torch.randn(1, 7, 32)
    x = blk.attn_norm(h)
    q = x @ blk.q_proj.weight.t()
    k = x @ blk.k_proj.weight.t()
    v = x @ blk.v_proj.weight.t()
    q, k, v = (t.view(1, 7, -1, 8).transpose(1, 2) for t in (q, k, v))
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, 8, 2, dtype=torch.float) / 8))
    ang = torch.einsum("i , j -> i j", torch.arange(7, dtype=torch.float), inv)
    ang = torch.cat((ang, ang), -1)
    q, k = (t * ang.cos() + rotate_half(t) * ang.sin() for t in (q, k))
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    h1 = h + att.transpose(1, 2).reshape(1, 7, 32) @ blk.attn_out.weight.t()
    y = blk.ff_norm(h1)
    want = h1 + (F.silu(y @ blk.ff_proj.weight.t()) * (y @ blk.up_proj.weight.t())) @ blk.ff_out.weight.t()
    with torch.no_grad():
        torch.testing.assert_close(blk(h, torch.arange(7)[None]), want, rtol=1e-5, atol=1e-5)


def test_batched_generation_equals_runs_of_one(model):
    from base_models.dimoo.generate import generate

    ids = _ids(model)
    prompts, uncond = [[1, 2, 3, 4, 5, 6], [7, 8]], [9, 10, 11]

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = generate(model, prompts, uncond, 2, 3, ids, CODEBOOK, gens(0, 1), steps=4)
    assert both.shape == (2, 6) and both.min() >= 0 and both.max() < CODEBOOK
    for i, p in enumerate(prompts):
        one = generate(model, [p], uncond, 2, 3, ids, CODEBOOK, gens(i), steps=4)
        assert torch.equal(both[i], one[0])
    again = generate(model, prompts, uncond, 2, 3, ids, CODEBOOK, gens(0, 1), steps=4)
    assert torch.equal(both, again)
    other = generate(model, prompts, uncond, 2, 3, ids, CODEBOOK, gens(5, 6), steps=4)
    assert not torch.equal(both, other)
