"""The text-to-image default's trainers: ``migm-bench train-base vqvae-t2i`` and ``dimoo-t2i``.

Smoke runs at toy sizes on a few real Fashion-MNIST images write a complete Lumina-DiMOO
checkpoint folder, which the ``dimoo`` base model's own loaders read strictly and sample from;
the objective's pieces (cosine mask, DiMOO's sequence layout, loss on masked positions only,
prompt dropout) and exact resumption are checked on their own.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.dimoo.checkpoint import CheckpointError, load_transformer
from base_models.dimoo.config import DiMOOConfig, read_config
from base_models.dimoo.model import DiMOOModel
from base_models.dimoo.text import DiMOOTokenizer, SpecialIds, image_part
from base_models.dimoo.vqvae import (
    WEIGHTS,
    codebook_size,
    downsampling_factor,
    folder_downsampling_factor,
    load_vqvae,
)
from base_models.fashion_t2i.train_dimoo import (
    DiMOOTrainSettings,
    build_transformer,
    checkpoint_config,
    choose_prompts,
    cosine_mask,
    masked_code_loss,
    masked_sequences,
)
from base_models.fashion_t2i.train_vqvae import VQVAE_T2I_CONFIG
from bench.sampling import sample

TINY_VQ = {
    **VQVAE_T2I_CONFIG,
    "block_out_channels": [8, 8, 16],
    "norm_num_groups": 4,
    "latent_channels": 4,
    "num_vq_embeddings": 32,
}  # fmt: skip  (factor 4: 8x8 codes of 32)
TINY_SHAPE = {"d_model": 32, "n_heads": 2, "n_kv_heads": 2, "n_layers": 2, "mlp_hidden_size": 64}
PROMPTS = ["a small dark boot on the left", "a large bag, inverted", "tee at the top"]


def train_base_status(argv: list[str]) -> tuple[int, str]:
    """``migm-bench train-base ARGV`` through the real CLI (train-base plugin registered
    explicitly): its exit status and what it printed."""
    import contextlib
    import io

    import bench.cli
    import bench.plugins
    from bench.plugins import PluginManager

    manager = PluginManager(autoload=False, plugins=[importlib.import_module("base_models.fashion.commands")])
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(bench.plugins, "_default_manager", manager)
        status = bench.cli.main(["train-base", *argv])
    return status, out.getvalue()


def train_base(argv: list[str]) -> dict:
    """``migm-bench train-base ARGV``, which must succeed; returns the JSON it prints."""
    status, out = train_base_status(argv)
    assert status == 0
    return json.loads(out)


def _common(folder: Path, data: Path, work: Path, steps: int) -> list[str]:
    return ["--out", str(folder), "--work", str(work), "--data", str(data), "--steps", str(steps),
            "--batch-size", "8"]  # fmt: skip


def _config_file(folder: Path, name: str, config: dict) -> str:
    path = folder.parent / f"{folder.name}-{name}.json"
    path.write_text(json.dumps(config))
    return str(path)


def run_vqvae(folder: Path, data: Path, work: Path, steps: int = 3) -> dict:
    """``train-base vqvae-t2i`` into the checkpoint folder ``folder``, toy sizes."""
    return train_base(["vqvae-t2i", *_common(folder, data, work, steps), "--config",
                       _config_file(folder, "vq", TINY_VQ), "--eval-images", "16"])  # fmt: skip


def run_dimoo(folder: Path, data: Path, work: Path, steps: int = 3, vqvae: Path | None = None,
              options: tuple[str, ...] = ()) -> dict:  # fmt: skip
    """``train-base dimoo-t2i`` into ``folder`` (the VQ from ``vqvae``, default ``folder``)."""
    extra = (["--vqvae", str(vqvae)] if vqvae else []) + list(options)
    return train_base(["dimoo-t2i", *_common(folder, data, work, steps), "--config",
                       _config_file(folder, "shape", TINY_SHAPE), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_fashion, tmp_path_factory):
    root = tmp_path_factory.mktemp("dimoo-t2i")
    vq = run_vqvae(root / "checkpoint", tiny_fashion, root / "work")
    dimoo = run_dimoo(root / "checkpoint", tiny_fashion, root / "work")
    return root / "checkpoint", root / "work", vq, dimoo


def direct_model(folder: Path, steps: int = 4) -> DiMOOModel:
    """The folder through the dimoo base model's loaders, the grid from the VQ's factor (as the
    plugin does)."""
    vq = load_vqvae(folder, factor=None)
    side = 32 // downsampling_factor(vq.config)
    model = DiMOOModel(
        load_transformer(folder), DiMOOTokenizer(folder), vq, codebook_size(vq), side, side, PROMPTS
    )
    model.default_sampling = dataclasses.replace(model.default_sampling, steps=steps, cfg_weight=2.0)
    return model


def vanilla_images(model) -> tuple[torch.Tensor, torch.Tensor]:
    cond = model.conditions(3, torch.Generator())
    gens = [torch.Generator().manual_seed(s) for s in range(3)]
    tokens = sample(model, Vanilla(VanillaConfig()), cond, gens, model.default_sampling).tokens
    return tokens, model.decode(tokens)


# ------------------------------------------------------------------ the folder
def test_the_folder_has_dimoo_layout_and_ships_the_ema_weights(trained):
    folder, work, vq_meta, meta = trained
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert names == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "vqvae/config.json", "vqvae/diffusion_pytorch_model.safetensors"}  # fmt: skip
    raw = json.loads((folder / "config.json").read_text())
    assert {f.name for f in dataclasses.fields(DiMOOConfig)} <= set(raw)  # every field config.py reads
    cfg = read_config(folder)
    tok = DiMOOTokenizer(folder)
    assert cfg.mask_token_id == tok.ids.mask and not cfg.weight_tying
    assert cfg.table_size == tok.tok.get_vocab_size(with_added_tokens=True) + TINY_VQ["num_vq_embeddings"]
    model = load_transformer(folder)  # strict: exactly the model.transformer.* keys
    assert all(k.startswith("model.transformer.") for k in model.state_dict())
    # the shipped weights are the EMA of the last checkpoint, not the raw model
    state = torch.load(work / "dimoo-t2i.pt", weights_only=True)
    shipped = model.state_dict()
    assert all(torch.equal(shipped[k], state["ema"][f"module.{k}"]) for k in shipped)
    assert any(not torch.equal(shipped[k], state["model"][k]) for k in shipped)
    assert math.isfinite(meta["final_loss"]) and meta["settings"]["steps"] == 3
    assert vq_meta["evaluation"]["test_images"] == 16 and math.isfinite(vq_meta["evaluation"]["test_psnr_db"])


def test_the_folder_samples_through_the_dimoo_model(trained):
    assert folder_downsampling_factor(trained[0]) == 4
    with pytest.raises(CheckpointError, match="upsamples by 4, the token grid needs 16"):
        load_vqvae(trained[0])  # Lumina-DiMOO's factor stays the default
    model = direct_model(trained[0])
    assert (model.rows, model.cols) == (8, 8)
    tokens, images = vanilla_images(model)
    assert tokens.shape == (3, 64) and int(tokens.min()) >= 0 and int(tokens.max()) < model.codebook_size
    assert images.shape == (3, 1, 32, 32) and torch.isfinite(images).all()
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_the_dimoo_plugin_loads_and_samples_the_folder(trained):
    from bench.plugins import PluginManager

    hooks = [importlib.import_module(m) for m in ("base_models.dimoo.hooks", "accelerators.hooks.vanilla")]
    manager = PluginManager(autoload=False, plugins=hooks)
    model = manager.make_base_model(f"dimoo:checkpoint={trained[0]},resolution=32,steps=4,cfg=2", "cpu")
    model.use_prompts(PROMPTS, {"source": "test", "count": len(PROMPTS)})
    tokens, images = vanilla_images(model)
    assert images.shape == (3, 1, 32, 32) and torch.isfinite(tokens.float()).all()
    assert float(images.min()) >= 0 and float(images.max()) <= 1


# ------------------------------------------------------------------ resumption
def _same_weights(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_vqvae_and_dimoo_resume_to_the_weights_of_a_straight_run(trained, tiny_fashion, tmp_path):
    folder = trained[0]
    # a run stopped after step 2 (checkpoints are also written at the end of a run): a 2-step
    # run, then the 3-step one in the same work folder resumes at 2 and must end where the
    # straight 3-step run ended (the dimoo runs on the straight run's VQ, so the codes agree)
    resumed, work = tmp_path / "resumed", tmp_path / "work"
    assert run_vqvae(resumed, tiny_fashion, work, steps=2)["resumed_from"] == 0
    assert run_vqvae(resumed, tiny_fashion, work, steps=3)["resumed_from"] == 2
    assert _same_weights(folder / "vqvae" / WEIGHTS, resumed / "vqvae" / WEIGHTS)
    assert run_dimoo(resumed, tiny_fashion, work, steps=2, vqvae=folder)["resumed_from"] == 0
    assert run_dimoo(resumed, tiny_fashion, work, steps=3, vqvae=folder)["resumed_from"] == 2
    assert _same_weights(folder / "model.safetensors", resumed / "model.safetensors")


def test_training_precision_is_a_named_option(trained, tiny_fashion, tmp_path):
    """bfloat16 (CPU autocast) is the default and the shipped model's; --precision float32 trains
    the same layout in float32 (a different model); other trainers refuse the option in one line."""
    folder = trained[0]
    fp32 = run_dimoo(tmp_path / "fp32", tiny_fashion, tmp_path / "work", vqvae=folder,
                     options=("--precision", "float32"))  # fmt: skip
    assert fp32["settings"]["precision"] == "float32" and math.isfinite(fp32["final_loss"])
    assert trained[3]["settings"]["precision"] == "bfloat16"
    assert not _same_weights(folder / "model.safetensors", tmp_path / "fp32" / "model.safetensors")
    assert load_transformer(tmp_path / "fp32") is not None  # the dimoo loader reads it unchanged
    with pytest.raises(ValueError, match="precision must be one of"):
        DiMOOTrainSettings(precision="float16")
    argv = [
        "vqvae-t2i",
        *_common(tmp_path / "vq", tiny_fashion, tmp_path / "w", 1),
        "--precision",
        "bfloat16",
    ]
    assert train_base_status(argv)[0] == 2  # "--precision does not apply to this model", one line
    assert not (tmp_path / "vq").exists()  # refused before anything was trained or written


# ------------------------------------------------------------------ the objective's pieces
def test_cosine_mask_masks_at_least_one_token_and_follows_the_cosine_ratio():
    mask = cosine_mask(4000, 64, torch.Generator().manual_seed(0))
    counts = mask.sum(1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 64
    # E[cos(pi/2 u)] = 2/pi; ceil adds ~1/2 token
    assert float(counts.float().mean()) / 64 == pytest.approx(2 / math.pi + 0.5 / 64, abs=0.02)
    assert torch.equal(mask, cosine_mask(4000, 64, torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from base_models.fashion_t2i.tokenizer import write_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    write_tokenizer(folder)
    return DiMOOTokenizer(folder)


def test_training_sequences_are_the_samplers_layout(tokenizer):
    ids, offset, rows, cols = tokenizer.ids, 90, 2, 3
    prompts = [tokenizer.prompt_ids(PROMPTS[0]), tokenizer.uncond_ids()]
    codes = torch.tensor([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    mask = torch.tensor([[True, False, False, True, False, False], [False] * 6])
    batch = masked_sequences(prompts, codes, mask, rows, cols, ids, offset)
    for r, prompt in enumerate(prompts):
        image = torch.where(mask[r], ids.mask, codes[r] + offset)
        want = prompt + image_part(rows, cols, ids, image)  # prompt, BOA, BOI, rows + newline, EOI, EOA
        assert batch.ids[r][batch.key_mask[r]].tolist() == want
        assert batch.positions[r][batch.key_mask[r]].tolist() == list(range(len(want)))
    assert not batch.key_mask[1, 0]  # the shorter (unconditional) prompt is left-padded


def test_the_loss_counts_only_masked_positions():
    raw = checkpoint_config(TINY_SHAPE, 20, 16, 3)
    model = build_transformer(raw, seed=0)
    ids = SpecialIds(mask=3, newline=4, boa=5, eoa=6, boi=7, eoi=8, uncondition=9)
    codes = torch.randint(0, 16, (2, 4), generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    batch = masked_sequences([[10, 11], [12]], codes, mask, 2, 2, ids, 20)
    loss = masked_code_loss(model, batch, codes, mask, 20)
    other = codes.clone()
    other[~mask] = (other[~mask] + 1) % 16  # only the targets of unmasked positions change
    assert masked_code_loss(model, batch, other, mask, 20) == loss
    other = codes.clone()
    other[0, 0] = (other[0, 0] + 1) % 16  # a masked target
    assert masked_code_loss(model, batch, other, mask, 20) != loss


def test_prompts_are_dropped_to_the_unconditional_one_at_the_given_rate():
    cond = [[i] for i in range(1000)]
    gen = torch.Generator().manual_seed(0)
    assert choose_prompts(cond, [-1], 0.0, gen) == cond
    assert choose_prompts(cond, [-1], 1.0, gen) == [[-1]] * 1000
    dropped = sum(p == [-1] for p in choose_prompts(cond, [-1], 0.1, gen))
    assert 60 <= dropped <= 140


def test_checkpoint_config_refuses_a_shape_the_loader_refuses():
    from base_models.dimoo.config import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        checkpoint_config({**TINY_SHAPE, "d_model": 30, "n_heads": 4}, 20, 16, 3)
