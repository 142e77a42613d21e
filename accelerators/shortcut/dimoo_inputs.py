"""What DiMOO-Shortcut reads at a step, built from the block protocol only (any ``SequenceLayout``).

Reference: Kaiwen-Zhu/MIGM-Shortcut, ``DiMOO-Shortcut/generators/image_generation_generator.py``
(``generate_image_shortcut``) and ``DiMOO-Shortcut/utils/shortcut.py`` (``get_samples_factory``):

* the cross-attention keys of a stream after a step are the tokens that changed in its sequence
  (the image tokens the step revealed) plus, in the conditional stream, every prompt position
  (``new_token_mask[..., :code_start-2] = True``: the text before BOA); the unconditional
  stream's "<uncondition>" prompt is never a key. Here: the revealed image positions mapped into
  the sequence (``bench.forward.to_sequence``) or'ed with the layout's ``prompt_mask``, which is
  True exactly there (and nowhere in unconditional rows);
* their embeddings are the base model's input embeddings of the ids at those sequence positions
  (``wte(x[new_token_mask])``): ``model.embed(tokens, cond, positions)``, which embeds the
  prompt ids and the revealed codes alike;
* rotary positions of queries and keys are the layout's ``position_ids`` (the reference's
  0..T-1 of an unpadded stream; left padding does not shift them);
* the mask ratio is the fraction of image tokens still masked after the step (``unknown_cnt /
  vq_len``; in training the same count read off the recorded reveal steps);
* padding rows (``key_mask`` False) are neither attended to nor counted in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from accelerators.shortcut.data import Trajectories
from accelerators.shortcut.dimoo_model import cross_attention_inputs
from bench.forward import image_index, layout_of
from bench.protocol import BaseModel, SequenceLayout


class NetInputs(NamedTuple):
    """``DiMOOShortcutNet`` inputs besides the features and the mask ratio.

    positions (B, L) long: rotary position of every row; valid (B, L) bool or None (no padding);
    keys (B, K, D): base-model embeddings of the key tokens; key_positions (B, K) long; key_valid
    (B, K) bool, False on padding keys."""

    positions: Tensor
    valid: Tensor | None
    keys: Tensor
    key_positions: Tensor
    key_valid: Tensor


def sequence_positions(layout: SequenceLayout, rows: int, device: torch.device) -> Tensor:
    """(B, L) rotary positions: the layout's ``position_ids``, or 0..L-1 when it has none."""
    if layout.position_ids is not None:
        return layout.position_ids
    return torch.arange(layout.seq_len, device=device).expand(rows, -1)


def key_mask_of(layout: SequenceLayout, revealed: Tensor) -> Tensor:
    """(B, L) bool, True at the key tokens: the revealed image tokens (``revealed`` (B, P) bool, in
    image order) at their sequence positions, or the prompt positions of conditional rows."""
    rows, seq_len = revealed.shape[0], layout.seq_len
    index = image_index(layout, rows, revealed.device)  # (B, P) sequence positions
    is_key = torch.zeros(rows, seq_len, dtype=torch.bool, device=revealed.device)
    is_key = is_key.scatter(1, index, revealed)
    if layout.prompt_mask is not None:
        is_key = is_key | layout.prompt_mask
    return is_key


@torch.no_grad()
def net_inputs(
    model: BaseModel, layout: SequenceLayout, tokens: Tensor, cond: Tensor, revealed: Tensor
) -> NetInputs:
    """The inputs for rows ``cond`` (B,) whose image tokens are ``tokens`` (B, P) after a step that
    revealed ``revealed`` (B, P) bool. Keys are embedded by ``model.embed`` at their sequence
    positions (``cross_attention_inputs`` packs them in sequence order, padding after them)."""
    rows, device = tokens.shape[0], tokens.device
    positions = sequence_positions(layout, rows, device)
    seq_index = torch.arange(layout.seq_len, device=device).expand(rows, -1)  # (B, L)
    keys, key_positions, key_valid = cross_attention_inputs(
        seq_index, positions, key_mask_of(layout, revealed), lambda at: model.embed(tokens, cond, at)
    )
    return NetInputs(positions, layout.key_mask, keys, key_positions, key_valid)


def predict_step(
    net, model: BaseModel, layout: SequenceLayout, prev: Tensor, tokens: Tensor, cond: Tensor, revealed: Tensor,
    mask_ratio: Tensor,
) -> Tensor:  # fmt: skip
    """A sampling step's features (B, L, D) predicted from the previous step's ``prev`` (B, L, D),
    the rows' tokens after its reveal, ``revealed`` (B, P) bool and ``mask_ratio`` (B,); the network
    runs in its own dtype (``generate_image_shortcut``)."""
    x = net_inputs(model, layout, tokens, cond, revealed)
    dtype = net.ln_f.weight.dtype
    out = net(
        prev.to(dtype), x.positions, mask_ratio, x.keys.to(dtype), x.key_positions, x.key_valid, x.valid
    )
    return out.to(prev.dtype)


# ------------------------------------------------------------------------ training pairs
@dataclass
class DiMOOPairBatch:
    """A batch of DiMOO-Shortcut training pairs, in the layout of its rows (B, L).

    prev, target (B, L, D) float32; inputs: ``NetInputs``; mask_ratio (B,); loss_mask (B, L) bool,
    every real row of the stream (the reference's ``F.mse_loss`` over the whole stream; padding
    excluded)."""

    prev: Tensor
    target: Tensor
    inputs: NetInputs
    mask_ratio: Tensor
    loss_mask: Tensor


def stream_conditions(model: BaseModel, cond: Tensor, stream: Tensor) -> Tensor:
    """(B,) conditions of the rows: the image's condition in stream 0, its null one in stream 1."""
    return torch.where(stream == 0, cond, model.null_conditions(cond))


def make_dimoo_pairs(
    model: BaseModel, data: Trajectories, image: Tensor, stream: Tensor, step: Tensor, device: torch.device
) -> DiMOOPairBatch:
    """Pairs (f_i -> f_{i+1}) for (image, stream, step) index triples (B,), on ``device``, as
    ``get_samples_factory`` builds them: keys = tokens with reveal_step == i (+ the prompt in the
    conditional stream), their ids from the final tokens, mask ratio = still masked after step i."""
    if data.cond is None:
        raise ValueError("DiMOO-Shortcut training needs the conditions of the trajectories (cond)")
    rows = stream_conditions(model, data.cond[image].to(device), stream.to(device))
    layout = layout_of(model, rows)
    reveal = data.reveal_step[image].to(device)  # (B, P)
    step = step.to(device)
    inputs = net_inputs(model, layout, data.tokens[image].to(device), rows, reveal == step[:, None])
    still_masked = reveal > step[:, None]
    prev = data.features[image, stream, step.cpu()].to(device).float()  # (B, L, D)
    target = data.features[image, stream, step.cpu() + 1].to(device).float()
    real = layout.key_mask if layout.key_mask is not None else torch.ones_like(prev[..., 0], dtype=torch.bool)
    return DiMOOPairBatch(prev, target, inputs, still_masked.float().mean(dim=1), real)


def predict(net, batch: DiMOOPairBatch) -> Tensor:
    """The network's next features (B, L, D) for a pair batch."""
    x = batch.inputs
    return net(batch.prev, x.positions, batch.mask_ratio, x.keys, x.key_positions, x.key_valid, x.valid)
