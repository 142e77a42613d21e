"""Image side of Lumina-DiMOO: the VQ decoder in the checkpoint folder's ``vqvae/`` subfolder.

The folder holds a diffusers ``VQModel`` (aMUSEd-VQ: ``config.json`` +
``diffusion_pytorch_model.safetensors``); the reference loads it with
``VQModel.from_pretrained(ckpt, subfolder="vqvae")`` and decodes with
``vqvae.decode(codes, force_not_quantize=True, shape=(n, h, w, latent_channels)).sample.clip(0, 1)``
(Alpha-VLLM/Lumina-DiMOO ``utils/image_utils.py`` ``decode_vq_to_image``): the integer codes are
looked up in the codebook (``lookup_from_codebook``) and the decoder's output is already in
[0, 1]. Here the model is built from its config with diffusers and its weights are loaded
strictly (one error naming the file and the first mismatching keys). Image codes in the
transformer's vocabulary are offset by head width - codebook size (the reference's
``text_vocab_size = vocab_total - codebook_size``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from base_models.dimoo.checkpoint import CheckpointError, check_keys

WEIGHTS = "diffusion_pytorch_model.safetensors"


def downsampling_factor(config) -> int:
    """Pixels per image token along each side: 2 ** (len(block_out_channels) - 1) (diffusers'
    ``Encoder`` downsamples after every block but the last). ``config``: the dict of
    ``vqvae/config.json`` or a loaded VQModel's ``.config``."""
    return 2 ** (len(config.get("block_out_channels", (64,))) - 1)


def folder_downsampling_factor(folder: str | Path) -> int:
    """``downsampling_factor`` of ``folder/vqvae/config.json``, read before any weight is loaded."""
    path = Path(folder) / "vqvae" / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the checkpoint folder's vqvae/")
    return downsampling_factor(json.loads(path.read_text()))


def load_vqvae(folder: str | Path, device: torch.device | str = "cpu", factor: int | None = 16):
    """``folder/vqvae`` -> diffusers VQModel in eval mode, float32 on every device as the reference
    keeps it (needs ``pip install diffusers``). ``factor``: the downsampling factor the caller's
    token grid assumes (Lumina-DiMOO's 16); a decoder with another factor is refused. None:
    any factor (the caller takes the grid from ``downsampling_factor(model.config)``)."""
    try:
        from diffusers import VQModel
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise ImportError("decoding DiMOO images needs diffusers' VQModel: pip install diffusers") from e
    sub = Path(folder) / "vqvae"
    cfg_path, weights = sub / "config.json", sub / WEIGHTS
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing from the checkpoint folder's vqvae/")
    cfg = json.loads(cfg_path.read_text())
    if not cfg.get("lookup_from_codebook", False):
        raise CheckpointError(
            f"{cfg_path}: lookup_from_codebook must be true (codes are decoded via the codebook)"
        )
    scale = downsampling_factor(cfg)
    if factor is not None and scale != factor:
        raise CheckpointError(f"{cfg_path}: the decoder upsamples by {scale}, the token grid needs {factor}")
    model = VQModel.from_config(cfg)
    try:
        with safe_open(str(weights), "pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    check_keys(model, {k: tuple(v.shape) for k, v in state.items()}, weights)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval().requires_grad_(False)


def codebook_size(vqvae) -> int:
    return int(vqvae.config.num_vq_embeddings)


@torch.no_grad()
def decode_codes(vqvae, codes: Tensor, rows: int, cols: int) -> Tensor:
    """codes (n, rows * cols) in [0, codebook) -> images (n, C, f rows, f cols) in [0, 1], f the
    decoder's ``downsampling_factor``."""
    n = codes.shape[0]
    if codes.shape[1] != rows * cols:
        raise ValueError(f"got {codes.shape[1]} codes per image for a {rows}x{cols} grid")
    v = codebook_size(vqvae)
    if codes.numel() and (codes.min() < 0 or codes.max() >= v):
        raise ValueError(f"image codes must lie in [0, {v}); got [{int(codes.min())}, {int(codes.max())}]")
    shape = (n, rows, cols, vqvae.config.latent_channels)
    out = vqvae.decode(codes.view(n, rows, cols).long(), force_not_quantize=True, shape=shape).sample
    return out.float().clip(0, 1)


def code_offset(head_width: int, codebook: int) -> int:
    """Token id of image code 0: head width - codebook size (the reference's text_vocab_size)."""
    if codebook <= 0 or head_width <= codebook:
        raise ValueError(f"a head of width {head_width} cannot end in a codebook of {codebook} codes")
    return head_width - codebook
