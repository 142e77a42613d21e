"""``config.json`` of a Lumina-DiMOO checkpoint folder -> ``DiMOOConfig``.

Field names and defaults are those of LLaDA's ``ModelConfig`` (Alpha-VLLM/Lumina-DiMOO,
``model/configuration_llada.py``); a Hugging Face ``LLaDAConfig`` file carries them at its top
level. Only the architecture this package implements is accepted (the "llama" block of
``model/modeling_llada.py``: RMSNorm, SwiGLU, rotary, no biases); any other option value is a
one-line error naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path


class ConfigError(ValueError):
    """A config.json this package cannot build a model from."""


@dataclass(frozen=True)
class DiMOOConfig:
    """The transformer's shape and options (reference defaults where config.json is silent).

    d_model D, n_heads H, n_kv_heads Hkv (None = H; GQA when smaller), n_layers, mlp_hidden_size
    (None = mlp_ratio * D), rope_theta, rms_norm_eps, vocab_size / embedding_size (the
    embedding table and head have ``embedding_size or vocab_size`` rows), weight_tying (head =
    embedding table), mask_token_id, input_emb_norm (embeddings * sqrt(D)), scale_logits
    (logits / sqrt(D)), rope_full_precision (rotary in float32).
    """

    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None
    n_layers: int = 12
    mlp_ratio: int = 4
    mlp_hidden_size: int | None = None
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    vocab_size: int = 50257
    embedding_size: int | None = 50304
    weight_tying: bool = True
    mask_token_id: int | None = 50256
    input_emb_norm: bool = False
    scale_logits: bool = False
    rope_full_precision: bool = True
    max_sequence_length: int = 1024

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_size(self) -> int:
        return self.mlp_hidden_size or self.mlp_ratio * self.d_model

    @property
    def table_size(self) -> int:
        """Rows of the embedding table = width of the output head."""
        return self.embedding_size or self.vocab_size

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# options of the reference's ModelConfig that must hold for the "llama" block implemented here
REQUIRED = {
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "rope": True,
    "alibi": False,
    "attention_layer_norm": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "block_group_size": 1,
    "layer_norm_with_affine": True,
}
OPTIONAL_FALSEY = ("bias_for_layer_norm",)


def config_from_dict(raw: dict, source: str = "config.json") -> DiMOOConfig:
    """Validate the reference options and build the config; unknown keys are ignored (HF extras)."""
    for key, want in REQUIRED.items():
        if key in raw and raw[key] != want:
            raise ConfigError(f"{source}: {key}={raw[key]!r} is not supported (only {want!r})")
    for key in OPTIONAL_FALSEY:
        if raw.get(key):
            raise ConfigError(f"{source}: {key}={raw[key]!r} is not supported (no biases)")
    if raw.get("multi_query_attention") and raw.get("n_kv_heads") not in (None, 1):
        raise ConfigError(f"{source}: multi_query_attention and n_kv_heads={raw['n_kv_heads']} conflict")
    known = {f.name for f in fields(DiMOOConfig)}
    kwargs = {k: v for k, v in raw.items() if k in known}
    if raw.get("multi_query_attention") and kwargs.get("n_kv_heads") is None:
        kwargs["n_kv_heads"] = 1
    cfg = DiMOOConfig(**kwargs)
    if cfg.d_model % cfg.n_heads:
        raise ConfigError(f"{source}: d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}")
    if cfg.head_dim % 2:
        raise ConfigError(f"{source}: head dim {cfg.head_dim} must be even for rotary embeddings")
    if cfg.n_heads % cfg.kv_heads:
        raise ConfigError(f"{source}: n_heads={cfg.n_heads} is not a multiple of n_kv_heads={cfg.kv_heads}")
    if cfg.embedding_size is not None and cfg.embedding_size < cfg.vocab_size:
        raise ConfigError(f"{source}: embedding_size={cfg.embedding_size} < vocab_size={cfg.vocab_size}")
    return cfg


def read_config(folder: str | Path) -> DiMOOConfig:
    """``folder/config.json`` -> DiMOOConfig (missing or malformed file: a one-line error)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json in the checkpoint folder")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return config_from_dict(raw, str(path))
