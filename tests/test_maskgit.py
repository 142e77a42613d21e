"""The MaskGIT base model: public checkpoint layouts (without the weights), loader errors,
and the block-protocol forward against an independent re-implementation of the reference.

The expected key lists below are written by hand from the reference sources, not derived
from our modules, so a renamed or reshaped parameter fails here:

* MaskTransformer: llvictorll/Maskgit-pytorch (now valeoai/Maskgit-pytorch)
  ``Network/transformer.py`` (PreNorm ``norm``/``fn``, Attention ``mha`` =
  ``nn.MultiheadAttention(batch_first=True, bias=True)``, FeedForward ``net`` =
  Linear, GELU, Dropout, Linear, Dropout; ``first_layer`` = LN, Dropout, Linear, GELU, LN,
  Dropout, Linear; ``last_layer`` = LN, Dropout, Linear, GELU, LN; ``tok_emb`` of
  V + 1 + nclass + 1 rows; ``pos_emb`` (1, P + 1, D); ``bias`` (P + 1, V + 1 + nclass + 1)).
  The .pth is ``Trainer/trainer.py`` ``save_network``: {'iter', 'global_epoch',
  'model_state_dict', 'optimizer_state_dict'}.
* VQGAN: taming-transformers ``taming/modules/diffusionmodules/model.py`` (Encoder /
  Decoder / ResnetBlock / AttnBlock with ``temb_ch = 0``, ``double_z=False``),
  ``taming/models/vqgan.py`` (VQModel: quantize.embedding, quant_conv, post_quant_conv), as
  vendored in Maskgit-pytorch ``Network/Taming``; Lightning's ``{'state_dict': ...}`` holds
  ``loss.*`` discriminator / LPIPS entries too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from base_models.maskgit.checkpoint import (
    CheckpointError,
    load_maskgit_pth,
    load_transformer_safetensors,
    load_vqgan_ckpt,
    load_vqgan_safetensors,
)
from base_models.maskgit.testing import TINY_TRANSFORMER, tiny_maskgit
from base_models.maskgit.transformer import MaskTransformer
from base_models.maskgit.vqgan import VQGANConfig, VQModel
from bench.forward import full_forward, gather_positions, logits_of, partial_forward

Shapes = dict[str, tuple[int, ...]]


# ------------------------------------------------------- reference layouts, by hand
def reference_maskgit_shapes(grid: int, codebook: int, nclass: int, dim: int, depth: int, mlp: int) -> Shapes:
    """Key -> shape of Maskgit-pytorch's MaskTransformer.state_dict()."""
    vocab = codebook + 1 + nclass + 1  # codes, [MASK], classes, dropped class
    seq = grid * grid + 1  # image tokens + class token
    shapes: Shapes = {
        "tok_emb.weight": (vocab, dim),
        "pos_emb": (1, seq, dim),
        "bias": (seq, vocab),
        # first_layer: 0 LayerNorm, 1 Dropout, 2 Linear, 3 GELU, 4 LayerNorm, 5 Dropout, 6 Linear
        "first_layer.0.weight": (dim,), "first_layer.0.bias": (dim,),
        "first_layer.2.weight": (dim, dim), "first_layer.2.bias": (dim,),
        "first_layer.4.weight": (dim,), "first_layer.4.bias": (dim,),
        "first_layer.6.weight": (dim, dim), "first_layer.6.bias": (dim,),
        # last_layer: 0 LayerNorm, 1 Dropout, 2 Linear, 3 GELU, 4 LayerNorm
        "last_layer.0.weight": (dim,), "last_layer.0.bias": (dim,),
        "last_layer.2.weight": (dim, dim), "last_layer.2.bias": (dim,),
        "last_layer.4.weight": (dim,), "last_layer.4.bias": (dim,),
    }  # fmt: skip
    for i in range(depth):
        a, f = f"transformer.layers.{i}.0", f"transformer.layers.{i}.1"
        shapes.update({
            f"{a}.norm.weight": (dim,), f"{a}.norm.bias": (dim,),
            # nn.MultiheadAttention with kdim == vdim == embed_dim: one packed in-projection
            f"{a}.fn.mha.in_proj_weight": (3 * dim, dim), f"{a}.fn.mha.in_proj_bias": (3 * dim,),
            f"{a}.fn.mha.out_proj.weight": (dim, dim), f"{a}.fn.mha.out_proj.bias": (dim,),
            f"{f}.norm.weight": (dim,), f"{f}.norm.bias": (dim,),
            # net: 0 Linear, 1 GELU, 2 Dropout, 3 Linear, 4 Dropout
            f"{f}.fn.net.0.weight": (mlp, dim), f"{f}.fn.net.0.bias": (mlp,),
            f"{f}.fn.net.3.weight": (dim, mlp), f"{f}.fn.net.3.bias": (dim,),
        })  # fmt: skip
    return shapes


def _resnet(prefix: str, cin: int, cout: int) -> Shapes:
    """taming ResnetBlock (temb_channels=0, so no temb_proj; 1x1 nin_shortcut if cin != cout)."""
    s: Shapes = {
        f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
        f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.conv1.bias": (cout,),
        f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
        f"{prefix}.conv2.weight": (cout, cout, 3, 3), f"{prefix}.conv2.bias": (cout,),
    }  # fmt: skip
    if cin != cout:
        s.update({f"{prefix}.nin_shortcut.weight": (cout, cin, 1, 1), f"{prefix}.nin_shortcut.bias": (cout,)})
    return s


def _attn(prefix: str, c: int) -> Shapes:
    """taming AttnBlock: GroupNorm ``norm`` and 1x1 convs q, k, v, proj_out."""
    s: Shapes = {f"{prefix}.norm.weight": (c,), f"{prefix}.norm.bias": (c,)}
    for name in ("q", "k", "v", "proj_out"):
        s.update({f"{prefix}.{name}.weight": (c, c, 1, 1), f"{prefix}.{name}.bias": (c,)})
    return s


def _mid(prefix: str, c: int) -> Shapes:
    return {
        **_resnet(f"{prefix}.block_1", c, c),
        **_attn(f"{prefix}.attn_1", c),
        **_resnet(f"{prefix}.block_2", c, c),
    }


def reference_vqgan_shapes(cfg: VQGANConfig) -> Shapes:
    """Key -> shape of taming's VQModel.state_dict() (Encoder/Decoder walked as taming builds them)."""
    ch, mult, nrb, n = cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks, len(cfg.ch_mult)
    s: Shapes = {"encoder.conv_in.weight": (ch, cfg.in_channels, 3, 3), "encoder.conv_in.bias": (ch,)}
    res, in_mult = cfg.resolution, (1,) + mult
    for lvl in range(n):
        block_in, block_out = ch * in_mult[lvl], ch * mult[lvl]
        for j in range(nrb):
            s.update(_resnet(f"encoder.down.{lvl}.block.{j}", block_in, block_out))
            block_in = block_out
            if res in cfg.attn_resolutions:
                s.update(_attn(f"encoder.down.{lvl}.attn.{j}", block_in))
        if lvl != n - 1:
            s.update({f"encoder.down.{lvl}.downsample.conv.weight": (block_in, block_in, 3, 3),
                      f"encoder.down.{lvl}.downsample.conv.bias": (block_in,)})  # fmt: skip
            res //= 2
    s.update(_mid("encoder.mid", block_in))
    s.update({"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,),
              "encoder.conv_out.weight": (cfg.z_channels, block_in, 3, 3),  # double_z=False
              "encoder.conv_out.bias": (cfg.z_channels,)})  # fmt: skip

    block_in, res = ch * mult[-1], cfg.resolution // 2 ** (n - 1)
    s.update(
        {"decoder.conv_in.weight": (block_in, cfg.z_channels, 3, 3), "decoder.conv_in.bias": (block_in,)}
    )
    s.update(_mid("decoder.mid", block_in))
    for lvl in reversed(range(n)):  # taming prepends each level, so up.{lvl} keeps its index
        block_out = ch * mult[lvl]
        for j in range(nrb + 1):
            s.update(_resnet(f"decoder.up.{lvl}.block.{j}", block_in, block_out))
            block_in = block_out
            if res in cfg.attn_resolutions:
                s.update(_attn(f"decoder.up.{lvl}.attn.{j}", block_in))
        if lvl != 0:
            s.update({f"decoder.up.{lvl}.upsample.conv.weight": (block_in, block_in, 3, 3),
                      f"decoder.up.{lvl}.upsample.conv.bias": (block_in,)})  # fmt: skip
            res *= 2
    s.update({"decoder.norm_out.weight": (block_in,), "decoder.norm_out.bias": (block_in,),
              "decoder.conv_out.weight": (cfg.out_ch, block_in, 3, 3), "decoder.conv_out.bias": (cfg.out_ch,)})  # fmt: skip

    s.update({
        "quantize.embedding.weight": (cfg.n_embed, cfg.embed_dim),
        "quant_conv.weight": (cfg.embed_dim, cfg.z_channels, 1, 1), "quant_conv.bias": (cfg.embed_dim,),
        "post_quant_conv.weight": (cfg.z_channels, cfg.embed_dim, 1, 1), "post_quant_conv.bias": (cfg.z_channels,),
    })  # fmt: skip
    return s


# Training-only entries of taming's Lightning checkpoint (VQLPIPSWithDiscriminator): dropped.
LOSS_SHAPES: Shapes = {
    "loss.logvar": (),
    "loss.perceptual_loss.scaling_layer.shift": (1, 3, 1, 1),
    "loss.perceptual_loss.net.slice1.0.weight": (64, 3, 3, 3),
    "loss.perceptual_loss.lin0.model.1.weight": (1, 64, 1, 1),
    "loss.discriminator.main.0.weight": (64, 3, 4, 4),
    "loss.discriminator.main.0.bias": (64,),
    "loss.discriminator.main.3.running_mean": (128,),
}

TINY = TINY_TRANSFORMER  # grid 4, V 16, 10 classes, D 32, depth 2, heads 2, mlp 64
# A tokenizer config that exercises every taming name: attention inside a level (res 8),
# a width change (nin_shortcut in encoder and decoder), down- and upsampling.
TINY_VQ = VQGANConfig(resolution=16, in_channels=3, out_ch=3, ch=8, ch_mult=(1, 2), num_res_blocks=2,
                      attn_resolutions=(8,), z_channels=8, n_embed=16, embed_dim=4, norm_groups=4)  # fmt: skip


def tiny_reference_maskgit_shapes() -> Shapes:
    return reference_maskgit_shapes(grid=4, codebook=16, nclass=10, dim=32, depth=2, mlp=64)


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}


def save_maskgit_pth(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The public MaskGIT_ImageNet_256.pth layout (Trainer.save_network)."""
    optimizer = {
        "state": {},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.96), "params": list(range(len(state)))}],
    }
    torch.save({"iter": 1_500_000, "global_epoch": 300, "model_state_dict": state, "optimizer_state_dict": optimizer},
               path)  # fmt: skip
    return path


def save_vqgan_ckpt(path: Path, state: dict[str, torch.Tensor]) -> Path:
    """The public VQGAN last.ckpt layout (a PyTorch Lightning checkpoint)."""
    torch.save({"epoch": 4, "global_step": 100_000, "state_dict": state, "optimizer_states": [], "lr_schedulers": []},
               path)  # fmt: skip
    return path


# ------------------------------------------------------------------- key layouts
def test_reference_transformer_layout_spot_checks():
    """A few entries written out literally, so the generator above is itself checked."""
    shapes = tiny_reference_maskgit_shapes()
    assert len(shapes) == 3 + 8 + 6 + 2 * 12  # 12 = 2 + 4 (attention) + 2 + 4 (MLP) per layer
    assert shapes["tok_emb.weight"] == (28, 32)  # 16 codes + [MASK] + 10 classes + dropped class
    assert shapes["pos_emb"] == (1, 17, 32)
    assert shapes["bias"] == (17, 28)
    assert shapes["transformer.layers.1.0.fn.mha.in_proj_weight"] == (96, 32)
    assert shapes["transformer.layers.1.1.fn.net.3.weight"] == (32, 64)


def test_our_transformer_has_exactly_the_reference_layout():
    ours = {k: tuple(v.shape) for k, v in MaskTransformer(TINY).state_dict().items()}
    ref = tiny_reference_maskgit_shapes()
    assert sorted(ours) == sorted(ref), (sorted(ours.keys() - ref.keys()), sorted(ref.keys() - ours.keys()))
    assert ours == ref


def test_our_vqgan_has_exactly_the_reference_layout():
    ref = reference_vqgan_shapes(TINY_VQ)
    # literal spot checks of the walk above
    assert "encoder.down.0.attn.0.norm.weight" not in ref  # level 0 runs at res 16: no attention
    assert ref["encoder.down.1.block.0.nin_shortcut.weight"] == (16, 8, 1, 1)
    assert ref["encoder.down.1.attn.1.q.weight"] == (16, 16, 1, 1)  # level 1 runs at res 8
    assert ref["decoder.up.1.block.2.conv2.weight"] == (16, 16, 3, 3)  # num_res_blocks + 1 blocks
    assert ref["decoder.up.0.block.0.nin_shortcut.weight"] == (8, 16, 1, 1)
    assert ref["decoder.up.1.upsample.conv.weight"] == (16, 16, 3, 3)
    assert (
        "decoder.up.0.upsample.conv.weight" not in ref and "encoder.down.1.downsample.conv.weight" not in ref
    )
    ours = {k: tuple(v.shape) for k, v in VQModel(TINY_VQ).state_dict().items()}
    assert sorted(ours) == sorted(ref), (sorted(ours.keys() - ref.keys()), sorted(ref.keys() - ours.keys()))
    assert ours == ref


# ---------------------------------------------------------------- strict loading
def test_load_maskgit_pth_public_layout(tmp_path):
    state = random_state(tiny_reference_maskgit_shapes())
    model = load_maskgit_pth(save_maskgit_pth(tmp_path / "MaskGIT_ImageNet_256.pth", state), TINY)
    loaded = model.state_dict()
    for key, value in state.items():  # every tensor lands under its own name
        assert torch.equal(loaded[key], value), key


def test_load_maskgit_pth_strips_module_prefix(tmp_path):
    state = random_state(tiny_reference_maskgit_shapes(), seed=1)
    ddp = {f"module.{k}": v for k, v in state.items()}  # saved from a DistributedDataParallel wrapper
    model = load_maskgit_pth(save_maskgit_pth(tmp_path / "ddp.pth", ddp), TINY)
    assert torch.equal(model.bias, state["bias"])
    assert torch.equal(model.transformer.layers[1][0].fn.mha.in_proj_weight,
                       state["transformer.layers.1.0.fn.mha.in_proj_weight"])  # fmt: skip


def test_load_maskgit_pth_truncated_file(tmp_path):
    path = save_maskgit_pth(
        tmp_path / "MaskGIT_ImageNet_256.pth", random_state(tiny_reference_maskgit_shapes())
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="MaskGIT_ImageNet_256.pth"):
        load_maskgit_pth(path, TINY)


def test_load_maskgit_pth_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_maskgit_pth(tmp_path / "nowhere.pth", TINY)


@pytest.mark.parametrize(
    "edit, names",
    [
        (lambda s: s.pop("transformer.layers.1.0.fn.mha.in_proj_bias"), ["missing", "layers.1.0.fn.mha.in_proj_bias"]),
        (lambda s: s.update({"transformer.layers.2.0.norm.weight": torch.ones(32)}),
         ["unexpected", "transformer.layers.2.0.norm.weight"]),
        (lambda s: s.update({"pos_emb": torch.zeros(1, 257, 32)}), ["pos_emb", "(1, 257, 32)", "(1, 17, 32)"]),
    ],
    ids=["missing-key", "extra-key", "wrong-shape"],
)  # fmt: skip
def test_load_maskgit_pth_mismatch_names_file_and_keys(tmp_path, edit, names):
    state = random_state(tiny_reference_maskgit_shapes())
    edit(state)
    path = save_maskgit_pth(tmp_path / "bad_maskgit.pth", state)
    with pytest.raises(CheckpointError) as info:
        load_maskgit_pth(path, TINY)
    message = str(info.value)
    assert "bad_maskgit.pth" in message
    for name in names:
        assert name in message


def test_load_maskgit_pth_wrong_config_is_an_error(tmp_path):
    """A 256 checkpoint loaded as a different model size fails loudly, naming the file."""
    path = save_maskgit_pth(tmp_path / "ckpt.pth", random_state(tiny_reference_maskgit_shapes()))
    with pytest.raises(CheckpointError, match="ckpt.pth.*shape"):
        load_maskgit_pth(path, dataclasses.replace(TINY, grid=8))


def test_load_vqgan_ckpt_public_layout_ignores_loss(tmp_path):
    state = random_state(reference_vqgan_shapes(TINY_VQ))
    full = {**state, **random_state(LOSS_SHAPES, seed=5)}
    model = load_vqgan_ckpt(save_vqgan_ckpt(tmp_path / "last.ckpt", full), TINY_VQ)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    images = model.decode_code(torch.randint(0, 16, (2, 8, 8)))  # f = 2: 8x8 codes -> 16x16 images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_load_vqgan_ckpt_errors(tmp_path):
    state = random_state(reference_vqgan_shapes(TINY_VQ))
    del state["decoder.up.1.upsample.conv.bias"]
    with pytest.raises(
        CheckpointError, match=r"last\.ckpt.*missing keys: decoder\.up\.1\.upsample\.conv\.bias"
    ):
        load_vqgan_ckpt(save_vqgan_ckpt(tmp_path / "last.ckpt", state), TINY_VQ)
    path = save_vqgan_ckpt(tmp_path / "cut.ckpt", random_state(reference_vqgan_shapes(TINY_VQ)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.ckpt"):
        load_vqgan_ckpt(path, TINY_VQ)


# ---------------------------------------------------------- shipped safetensors
def _ship(path: Path, module: torch.nn.Module, kind: str, config: dict) -> Path:
    tensors = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={"kind": kind, "config": json.dumps(config)})
    return path


def test_safetensors_round_trip(tmp_path):
    transformer = tiny_maskgit(seed=3, with_vqgan=False).transformer
    path = _ship(tmp_path / "maskgit.safetensors", transformer, "maskgit-transformer", TINY.to_dict())
    loaded = load_transformer_safetensors(path)
    assert loaded.cfg == TINY
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in transformer.state_dict().items())
    vq = VQModel(TINY_VQ)
    loaded_vq = load_vqgan_safetensors(_ship(tmp_path / "tok.safetensors", vq, "vqgan", TINY_VQ.to_dict()))
    assert loaded_vq.cfg == TINY_VQ  # tuples survive the JSON round trip


def test_safetensors_wrong_kind(tmp_path):
    path = _ship(tmp_path / "tokenizer.safetensors", VQModel(TINY_VQ), "vqgan", TINY_VQ.to_dict())
    with pytest.raises(CheckpointError, match=r"tokenizer\.safetensors.*'vqgan'.*'maskgit-transformer'"):
        load_transformer_safetensors(path)
    path = _ship(
        tmp_path / "maskgit.safetensors", MaskTransformer(TINY), "maskgit-transformer", TINY.to_dict()
    )
    with pytest.raises(CheckpointError, match=r"maskgit\.safetensors.*'maskgit-transformer'.*'vqgan'"):
        load_vqgan_safetensors(path)


def test_safetensors_corrupt_and_missing(tmp_path):
    path = _ship(
        tmp_path / "maskgit.safetensors", MaskTransformer(TINY), "maskgit-transformer", TINY.to_dict()
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"maskgit\.safetensors"):
        load_transformer_safetensors(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_vqgan_safetensors(garbage)
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors"):
        load_transformer_safetensors(tmp_path / "absent.safetensors")


def test_safetensors_tensors_not_fitting_the_config(tmp_path):
    small = dataclasses.replace(TINY, depth=1)
    path = _ship(
        tmp_path / "maskgit.safetensors", MaskTransformer(small), "maskgit-transformer", TINY.to_dict()
    )
    with pytest.raises(CheckpointError, match=r"maskgit\.safetensors.*missing keys: transformer\.layers\.1"):
        load_transformer_safetensors(path)


# --------------------------------------------------- forward vs. the reference
@torch.no_grad()
def reference_forward(tr: MaskTransformer, tokens: torch.Tensor, labels: torch.Tensor, drop: torch.Tensor):
    """Maskgit-pytorch ``MaskTransformer.forward`` re-written here on the same parameters,
    with ``nn.MultiheadAttention``'s own forward ``mha(x, x, x)``.

    tokens (B, P), labels (B,), drop (B,) bool -> last-layer features (B, P + 1, D) and
    logits (B, P, V + 1) (the reference keeps the [MASK] column)."""
    cfg = tr.cfg
    cls = labels.view(-1, 1) + cfg.codebook_size + 1  # class ids follow the codes and [MASK]
    cls[drop] = cfg.codebook_size + 1 + cfg.nclass  # the dropped-class token
    x = tr.tok_emb(torch.cat([tokens, cls], dim=1)) + tr.pos_emb  # class token last
    x = tr.first_layer(x)
    for attn, ff in tr.transformer.layers:
        h = attn.norm(x)
        x = attn.fn.mha(h, h, h)[0] + x
        x = ff.fn.net(ff.norm(x)) + x
    x = tr.last_layer(x)
    logits = x @ tr.tok_emb.weight.T + tr.bias
    return x, logits[:, : cfg.num_image_tokens, : cfg.codebook_size + 1]


def _batch(model, n: int, seed: int):
    """Half-masked random tokens and labels; the last row is unconditional (label -1)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, model.codebook_size, (n, model.num_image_tokens), generator=g)
    tokens[torch.rand(tokens.shape, generator=g) < 0.5] = model.mask_id
    cond = torch.randint(0, model.nclass, (n,), generator=g)
    cond[-1] = -1
    return tokens, cond


@torch.no_grad()
def test_block_protocol_forward_matches_reference():
    model = tiny_maskgit(seed=1, with_vqgan=False)
    tokens, cond = _batch(model, 3, seed=0)
    feats, caches = full_forward(model, tokens, cond)
    ref_feats, ref_logits = reference_forward(model.transformer, tokens, cond.clamp_min(0), cond < 0)
    assert feats.shape == (3, model.seq_len, model.dim) and len(caches) == 2
    torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=1e-5)
    logits = logits_of(model, feats)
    assert logits.shape == (3, model.num_image_tokens, model.codebook_size)  # no [MASK] column
    torch.testing.assert_close(logits, ref_logits[..., : model.codebook_size], atol=1e-5, rtol=1e-5)
    # the training forward keeps the reference's V + 1 columns
    torch.testing.assert_close(model.transformer(tokens, cond), ref_logits, atol=1e-5, rtol=1e-5)
    # the dropped-class row really differs from its conditional twin
    assert not torch.allclose(full_forward(model, tokens[-1:], cond[:1])[0], feats[-1:], atol=1e-3)


@torch.no_grad()
def test_value_matches_qkv():
    model = tiny_maskgit(seed=2, with_vqgan=False)
    h = torch.randn(2, 5, model.dim, generator=torch.Generator().manual_seed(0))
    for block in model.blocks:
        torch.testing.assert_close(block.value(h), block.qkv(h)[2])


@torch.no_grad()
def test_partial_forward_on_all_positions_equals_full_forward():
    model = tiny_maskgit(seed=3, with_vqgan=False)
    tokens, cond = _batch(model, 2, seed=1)
    feats, _ = full_forward(model, tokens, cond)
    # stale caches from other tokens: a partial pass over every position rewrites all of them
    _, stale = full_forward(model, *_batch(model, 2, seed=2))
    every = torch.arange(model.seq_len).expand(2, -1)
    torch.testing.assert_close(
        partial_forward(model, tokens, cond, every, stale), feats, atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_partial_forward_on_a_subset_equals_full_features():
    model = tiny_maskgit(seed=4, with_vqgan=False)
    tokens, cond = _batch(model, 2, seed=3)
    feats, caches = full_forward(model, tokens, cond)
    positions = torch.tensor([[0, 5, 9, 16], [3, 4, 15, 16]])  # per-row subsets; 16 = the class position
    sub = partial_forward(model, tokens, cond, positions, caches)
    assert sub.shape == (2, 4, model.dim)
    torch.testing.assert_close(sub, gather_positions(feats, positions), atol=1e-5, rtol=1e-5)
    # the head on a subset of image positions agrees with the full logits there
    img = positions[:, :3]
    torch.testing.assert_close(model.head(sub[:, :3], img), gather_positions(logits_of(model, feats), img),
                               atol=1e-5, rtol=1e-5)  # fmt: skip
    # and the subset really attends to the cache: stale K/V give other features
    _, stale = full_forward(model, *_batch(model, 2, seed=4))
    assert not torch.allclose(partial_forward(model, tokens, cond, positions, stale),
                              gather_positions(feats, positions), atol=1e-3)  # fmt: skip
