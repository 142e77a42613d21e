"""Loading MaskGIT weights: public MaskGIT-pytorch checkpoints and shipped safetensors.

Public layouts (llvictorll/Maskgit-pytorch):
- ``MaskGIT_ImageNet_256.pth`` / ``_512.pth``: ``torch.save({'iter', 'global_epoch',
  'model_state_dict', 'optimizer_state_dict'})`` (``Trainer/trainer.py`` save_network);
  keys of ``MaskTransformer`` (``module.``/``_orig_mod.`` prefixes are stripped).
- VQGAN ``last.ckpt``: a Lightning checkpoint ``{'state_dict': ...}`` of taming's
  ``VQModel``; the ``loss.*`` entries (discriminator, LPIPS) are training-only and dropped.
Everything else must match exactly: a wrong or truncated file is an error naming the
file and the first mismatching keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
from base_models.maskgit.vqgan import VQGANConfig, VQModel
from bench.integrity import verify

# The public ImageNet configurations (MaskGIT-pytorch README / Trainer/vit.py).
IMAGENET_256 = TransformerConfig(grid=16, codebook_size=1024, nclass=1000, hidden_dim=768, depth=24,
                                 heads=16, mlp_dim=3072, dropout=0.1)  # fmt: skip
IMAGENET_512 = TransformerConfig(grid=32, codebook_size=1024, nclass=1000, hidden_dim=768, depth=24,
                                 heads=16, mlp_dim=3072, dropout=0.1)  # fmt: skip
IMAGENET_VQGAN = VQGANConfig(resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=(1, 1, 2, 2, 4),
                             num_res_blocks=2, attn_resolutions=(16,), z_channels=256, n_embed=1024,
                             embed_dim=256)  # fmt: skip


class CheckpointError(ValueError):
    """A weights file that does not fit the model it is loaded into."""


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """Load ``state`` into ``module`` requiring identical key sets and shapes."""
    expected = module.state_dict()
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    wrong = [
        f"{k} {tuple(state[k].shape)} != expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        problems.append(
            f"shape mismatches: {'; '.join(wrong[:3])}"
            + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else "")
        )
    if problems:
        raise CheckpointError(f"{path}: does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _torch_load(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle errors, ...
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})"
        ) from e


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def read_maskgit_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The transformer state dict of a MaskGIT-pytorch ``.pth`` checkpoint (prefixes stripped)."""
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return _strip_prefixes(obj.get("model_state_dict", obj))


def load_maskgit_pth(path: str | Path, cfg: TransformerConfig = IMAGENET_256) -> MaskTransformer:
    """A public MaskGIT-pytorch transformer checkpoint -> MaskTransformer (strict)."""
    model = MaskTransformer(cfg)
    load_strict(model, read_maskgit_state(path), path)
    return model


# MaskGIT-pytorch builds every size with 16 heads (Trainer/vit.py, vit_size base / big / huge);
# attention weights do not record the head count, so it is an option.
DEFAULT_HEADS = 16


def config_from_state(
    state: dict[str, torch.Tensor],
    path: str | Path,
    heads: int = DEFAULT_HEADS,
    codebook: int = 0,
    classes: int = 0,
) -> TransformerConfig:
    """Read a v1 MaskTransformer's shape from its weights: width and vocabulary from
    ``tok_emb.weight`` (vocab, D), the grid from ``pos_emb`` (1, P + 1, D), depth from the
    ``transformer.layers.<i>`` keys, the MLP width from the first feed-forward. The
    vocabulary is codebook + [MASK] + classes + dropped class, so one of ``codebook`` /
    ``classes`` must be given (or read from the VQGAN) to split it."""
    for key in ("tok_emb.weight", "pos_emb", "transformer.layers.0.1.fn.net.0.weight"):
        if key not in state:
            raise CheckpointError(f"{path}: not a MaskGIT v1 transformer (no {key!r})")
    vocab, dim = state["tok_emb.weight"].shape
    positions = state["pos_emb"].shape[1] - 1
    grid = math.isqrt(positions)
    if grid * grid != positions:
        raise CheckpointError(f"{path}: {positions} image positions do not form a square grid")
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.layers."))
    mlp_dim = state["transformer.layers.0.1.fn.net.0.weight"].shape[0]
    if codebook < 0 or classes < 0:
        raise ValueError(f"{path}: codebook and classes must be >= 0, got {codebook}, {classes}")
    if not codebook and not classes:
        raise ValueError(
            f"{path}: vocabulary {vocab} = codebook + classes + 2 cannot be split from the weights; "
            "give codebook=V or classes=C (or a vqgan file)"
        )
    codebook = codebook or vocab - classes - 2
    classes = classes or vocab - codebook - 2
    if codebook + classes + 2 != vocab or codebook < 1 or classes < 1:
        raise CheckpointError(
            f"{path}: vocabulary {vocab} != codebook {codebook} + classes {classes} + 2 ([MASK], dropped class)"
        )
    if heads < 1 or dim % heads:
        raise ValueError(f"{path}: width {dim} is not divisible by heads={heads}")
    return TransformerConfig(grid=grid, codebook_size=codebook, nclass=classes, hidden_dim=dim, depth=depth,
                             heads=heads, mlp_dim=mlp_dim, dropout=0.1)  # fmt: skip


def load_vqgan_ckpt(path: str | Path, cfg: VQGANConfig = IMAGENET_VQGAN) -> VQModel:
    """The public taming VQGAN ``last.ckpt`` -> VQModel (strict, ``loss.*`` dropped)."""
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    state = obj.get("state_dict", obj)
    state = {k: v for k, v in _strip_prefixes(state).items() if not k.startswith("loss.")}
    model = VQModel(cfg)
    load_strict(model, state, path)
    return model


# ------------------------------------------------------------- shipped safetensors
def decode_metadata(raw: dict[str, str]) -> dict:
    """safetensors metadata (all strings) -> values, JSON-decoded where they are JSON."""
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    return meta


def read_safetensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors + decoded metadata of a shipped weights file; checks its ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    verify(path)  # shipped files: bytes must match their folder's INTEGRITY.json
    try:
        with safe_open(str(path), "pt") as f:
            raw_meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    meta = decode_metadata(raw_meta)
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: holds {meta.get('kind')!r} weights, expected {kind!r}")
    if "config" not in meta:
        raise CheckpointError(f"{path}: metadata has no 'config' entry")
    return tensors, meta


def load_vqgan_safetensors(path: str | Path) -> VQModel:
    tensors, meta = read_safetensors(path, "vqgan")
    model = VQModel(VQGANConfig.from_dict(meta["config"]))
    load_strict(model, tensors, path)
    return model


def load_transformer_safetensors(path: str | Path) -> MaskTransformer:
    tensors, meta = read_safetensors(path, "maskgit-transformer")
    model = MaskTransformer(TransformerConfig(**meta["config"]))
    load_strict(model, tensors, path)
    return model
