"""Text side of Lumina-DiMOO: tokenizer, prompt template, special tokens, sequence layout.

References (Alpha-VLLM/Lumina-DiMOO):
- ``utils/prompt_utils.py`` ``generate_text_to_image_prompt``: the prompt is
  "<system>" + "Generate an image according to the text prompt." + "</system>" + "<user>" +
  prompt + "</user>"; the unconditional prompt has "<uncondition>" in place of the user text.
- ``inference/inference_t2i.py``: ids = tokenizer(prompt)["input_ids"] + [BOA, BOI] + image
  rows + [EOI, EOA]; the unconditional stream is tokenizer(uncond prompt) followed by the same
  image part (``generators/image_generation_generator.py``: ``uncon_ids`` + ``x[:, code_start-2:]``).
- ``utils/image_utils.py`` ``add_break_line`` / ``calculate_vq_params``: H/16 rows of W/16 image
  tokens, each row followed by the newline token.
- ``config.py`` ``SPECIAL_TOKENS``: the known ids (mask 126336, newline 126084, <answer> 126354,
  </answer> 126355, <IMAGE> 126349, </IMAGE> 126350, <uncondition> 126351; image codes from
  126356). Token spellings from the technical report's Table 1 (arXiv 2510.06308) and LLaDA's
  "<|mdm_mask|>". MIGM-Shortcut (``DiMOO-Shortcut/utils/shortcut.py``) gives the 14 ids of the
  tokenised unconditional prompt, used as a second check on a full-size tokenizer.

The tokenizer is read with the ``tokenizers`` library from ``tokenizer.json`` (local file only).
``encode`` applies the file's post-processor, as the reference's ``tokenizer(text)`` call does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

SYSTEM_PROMPT = "Generate an image according to the text prompt."
UNCONDITION = "<uncondition>"


def t2i_prompt(text: str) -> str:
    """The conditional prompt string for ``text``."""
    return f"<system>{SYSTEM_PROMPT}</system><user>{text}</user>"


def uncond_prompt() -> str:
    """The unconditional prompt string (classifier-free guidance)."""
    return f"<system>{SYSTEM_PROMPT}</system><user>{UNCONDITION}</user>"


# role -> (spelling in the tokenizer, DiMOO's id)
SPECIAL_TOKENS = {
    "mask": ("<|mdm_mask|>", 126336),
    "newline": ("<end-of-line>", 126084),
    "boa": ("<answer>", 126354),
    "eoa": ("</answer>", 126355),
    "boi": ("<IMAGE>", 126349),
    "eoi": ("</IMAGE>", 126350),
    "uncondition": ("<uncondition>", 126351),
}
DIMOO_IMAGE_OFFSET = 126356
# DiMOO-Shortcut/utils/shortcut.py: the unconditional prompt, tokenised
DIMOO_UNCOND_IDS = (126332, 36289, 289, 3972, 4631, 297, 268, 3019, 12166, 13, 126333, 126334, 126351, 126335)


class TokenizerError(ValueError):
    """A tokenizer that lacks DiMOO's special tokens or disagrees with its known ids."""


@dataclass(frozen=True)
class SpecialIds:
    mask: int
    newline: int
    boa: int
    eoa: int
    boi: int
    eoi: int
    uncondition: int


def check_known_ids(ids: SpecialIds, uncond_ids: list[int] | None = None, source: str = "tokenizer") -> None:
    """A full-size DiMOO tokenizer must give DiMOO's known ids (and unconditional prompt)."""
    wrong = [f"{role} {getattr(ids, role)} != {known}" for role, (_, known) in SPECIAL_TOKENS.items()
             if getattr(ids, role) != known]  # fmt: skip
    if wrong:
        raise TokenizerError(f"{source}: special-token ids differ from Lumina-DiMOO's: " + ", ".join(wrong))
    if uncond_ids is not None and tuple(uncond_ids) != DIMOO_UNCOND_IDS:
        raise TokenizerError(
            f"{source}: the unconditional prompt tokenises to {uncond_ids}, not DiMOO's {list(DIMOO_UNCOND_IDS)}"
        )


class DiMOOTokenizer:
    """``tokenizer.json`` of the checkpoint folder + DiMOO's special-token ids.

    full_size: the tokenizer claims to be DiMOO's (its vocabulary reaches the image-code
    offset), so the known ids are enforced; tiny test tokenizers only need the spellings.
    """

    def __init__(self, folder: str | Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - exercised only without the package
            raise ImportError(
                "the dimoo base model needs the 'tokenizers' package: pip install tokenizers"
            ) from e
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer.json in the checkpoint folder")
        self.path = path
        self.tok = Tokenizer.from_file(str(path))
        self.full_size = self.tok.get_vocab_size(with_added_tokens=True) >= DIMOO_IMAGE_OFFSET
        found = {}
        for role, (spelling, known) in SPECIAL_TOKENS.items():
            i = self.tok.token_to_id(spelling)
            if i is None and self.full_size and self.tok.id_to_token(known) is not None:
                i = known  # spelled differently in this file: fall back to the known id, still checked
            if i is None:
                raise TokenizerError(f"{path}: has no special token {spelling!r} ({role})")
            found[role] = i
        self.ids = SpecialIds(**found)
        if self.full_size:
            check_known_ids(self.ids, self.encode(uncond_prompt()), str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the conditional prompt for ``text``."""
        return self.encode(t2i_prompt(text))

    def uncond_ids(self) -> list[int]:
        return self.encode(uncond_prompt())


# ------------------------------------------------------------------------- layout
def grid_of(height: int, width: int, factor: int = 16) -> tuple[int, int]:
    """Image size in pixels -> token grid (rows, cols); sizes must be positive multiples of 16."""
    if height <= 0 or width <= 0 or height % factor or width % factor:
        raise ValueError(f"image size {height}x{width} must be positive multiples of {factor}")
    return height // factor, width // factor


def image_part(rows: int, cols: int, ids: SpecialIds, codes: Tensor | None = None) -> list[int]:
    """[BOA, BOI] + rows x (cols image tokens + newline) + [EOI, EOA].

    codes: (rows * cols,) token ids for the image tokens (default: all mask)."""
    if codes is None:
        codes = torch.full((rows * cols,), ids.mask, dtype=torch.long)
    flat = codes.tolist()
    out = [ids.boa, ids.boi]
    for r in range(rows):
        out += flat[r * cols : (r + 1) * cols] + [ids.newline]
    return out + [ids.eoi, ids.eoa]


def image_positions(prompt_len: int, rows: int, cols: int) -> Tensor:
    """(P,) sequence index of every image token, row-major: prompt_len + 2 + r (cols + 1) + c."""
    r = torch.arange(rows)[:, None]
    c = torch.arange(cols)[None, :]
    return (prompt_len + 2 + r * (cols + 1) + c).reshape(-1)


@dataclass
class Batch:
    """A left-padded batch of sequences for the transformer.

    ids (B, L) long (padding = ``pad_id``); positions (B, L) long rotary positions, 0 at each
    row's first real token (padding rows get 0); key_mask (B, L) bool, True = real token;
    image_pos (B, P) long sequence index of each image token (equal across rows: left padding
    aligns the image parts at the end).
    """

    ids: Tensor
    positions: Tensor
    key_mask: Tensor
    image_pos: Tensor


def build_batch(prompts: list[list[int]], rows: int, cols: int, ids: SpecialIds, pad_id: int = 0) -> Batch:
    """Token ids of each row's prompt -> the all-mask DiMOO sequences, left-padded."""
    if not prompts:
        raise ValueError("build_batch needs at least one prompt")
    part = image_part(rows, cols, ids)
    seqs = [p + part for p in prompts]
    length = max(len(s) for s in seqs)
    b = len(seqs)
    out_ids = torch.full((b, length), pad_id, dtype=torch.long)
    key_mask = torch.zeros(b, length, dtype=torch.bool)
    positions = torch.zeros(b, length, dtype=torch.long)
    for i, s in enumerate(seqs):
        pad = length - len(s)
        out_ids[i, pad:] = torch.tensor(s, dtype=torch.long)
        key_mask[i, pad:] = True
        positions[i, pad:] = torch.arange(len(s))
    img = image_positions(length - len(part), rows, cols)  # same for every row
    return Batch(out_ids, positions, key_mask, img.expand(b, -1).clone())
