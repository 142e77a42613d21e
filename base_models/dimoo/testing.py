"""A tiny random Lumina-DiMOO checkpoint folder in the public layout, for tests and smoke runs.

``write_tiny_checkpoint(folder)`` writes what a user's downloaded Alpha-VLLM/Lumina-DiMOO folder
holds, at toy sizes: ``config.json`` (LLaDA fields), ``model.safetensors`` or a sharded
``model.safetensors.index.json`` + shards, ``tokenizer.json`` / ``tokenizer_config.json`` (a
word-level tokenizer with DiMOO's special-token spellings; needs ``tokenizers``) and
``vqvae/`` (a diffusers VQModel with codebook lookup and 16x upsampling; needs ``diffusers``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from base_models.dimoo.config import config_from_dict
from base_models.dimoo.llada import LLaDAModel
from base_models.dimoo.text import SPECIAL_TOKENS

WORDS = [
    "generate",
    "an",
    "image",
    "according",
    "to",
    "the",
    "text",
    "prompt",
    ".",
    "a",
    "red",
    "blue",
    "green",
] + ["cat", "dog", "on", "mat", "under", "sky", "big", "small", "photo", "of"]
EXTRA_SPECIALS = ("<system>", "</system>", "<user>", "</user>")
CODEBOOK = 16
TEXT_VOCAB = 80  # ids below this are text / special tokens; image codes follow

TINY_CONFIG = {
    "architectures": ["LLaDAModelLM"],
    "model_type": "llada",
    "d_model": 32,
    "n_heads": 4,
    "n_kv_heads": 2,
    "n_layers": 2,
    "mlp_hidden_size": 48,
    "mlp_ratio": 4,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "vocab_size": TEXT_VOCAB + CODEBOOK,
    "embedding_size": TEXT_VOCAB + CODEBOOK,
    "weight_tying": False,
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "rope": True,
    "alibi": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "block_group_size": 1,
    "attention_layer_norm": False,
    "rope_full_precision": True,
    "max_sequence_length": 4096,
}


def tiny_vocab() -> dict[str, int]:
    """Word-level vocabulary: [UNK], the words, DiMOO's special spellings, the prompt tags."""
    tokens = ["[UNK]", *WORDS, *(s for s, _ in SPECIAL_TOKENS.values()), *EXTRA_SPECIALS]
    return {t: i for i, t in enumerate(tokens)}


def random_state(raw_config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (norm weights away from 1, so the weight multiply is exercised)."""
    cfg = config_from_dict(raw_config)
    gen = torch.Generator().manual_seed(seed)
    model = LLaDAModel(cfg)
    state = {}
    for k, v in model.state_dict().items():
        if k.endswith("norm.weight") or "ln_f" in k:
            state[k] = 1 + 0.2 * torch.randn(v.shape, generator=gen)
        else:
            state[k] = torch.randn(v.shape, generator=gen) * (1.0 if "wte" in k else v.shape[-1] ** -0.5)
    return state


def write_weights(folder: Path, state: dict[str, torch.Tensor], sharded: bool) -> None:
    if not sharded:
        save_file(state, str(folder / "model.safetensors"))
        return
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * 4 for v in state.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([s for s, _ in SPECIAL_TOKENS.values()] + list(EXTRA_SPECIALS))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))


def write_vqvae(folder: Path, seed: int = 0) -> None:
    from diffusers import VQModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vq = VQModel(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
            up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(8,) * 5, layers_per_block=1,
            latent_channels=4, num_vq_embeddings=CODEBOOK, norm_num_groups=4, lookup_from_codebook=True,
            mid_block_add_attention=False,
        )  # fmt: skip
    vq.save_pretrained(str(folder / "vqvae"), safe_serialization=True)


def write_tiny_checkpoint(
    folder: str | Path,
    sharded: bool = False,
    seed: int = 0,
    tokenizer: bool = True,
    vqvae: bool = True,
    **config_overrides,
) -> Path:
    """Write the folder; returns its path. ``config_overrides`` change config.json fields."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {**TINY_CONFIG, "mask_token_id": tiny_vocab()["<|mdm_mask|>"], **config_overrides}
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    write_weights(folder, random_state(raw, seed), sharded)
    if tokenizer:
        write_tokenizer(folder)
    if vqvae:
        write_vqvae(folder, seed)
    return folder
