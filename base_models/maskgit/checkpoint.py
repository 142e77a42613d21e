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
        problems.append(f"shape mismatches: {'; '.join(wrong[:3])}" + (f" (+{len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    if problems:
        raise CheckpointError(f"{path}: does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def _torch_load(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle errors, ...
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from e


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def load_maskgit_pth(path: str | Path, cfg: TransformerConfig = IMAGENET_256) -> MaskTransformer:
    """A public MaskGIT-pytorch transformer checkpoint -> MaskTransformer (strict)."""
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    state = obj.get("model_state_dict", obj)
    model = MaskTransformer(cfg)
    load_strict(model, _strip_prefixes(state), path)
    return model


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
