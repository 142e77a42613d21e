"""A word-level text tokenizer for the captions, as ``tokenizer.json`` (Hugging Face ``tokenizers``).

The file loads with ``tokenizers.Tokenizer.from_file``, ``transformers.PreTrainedTokenizerFast
(tokenizer_file=...)`` and ``base_models.dimoo.text.DiMOOTokenizer`` (a checkpoint folder's
``tokenizer.json``): it holds DiMOO's special-token spellings (``base_models.dimoo.text.
SPECIAL_TOKENS``: mask, newline, <answer>, </answer>, <IMAGE>, </IMAGE>, <uncondition>) and the
prompt tags <system> </system> <user> </user> of DiMOO's prompt template, as special tokens.
The vocabulary stays far below DiMOO's image-code offset, so DiMOOTokenizer treats it as a
small tokenizer (spellings checked, DiMOO's full-size ids not enforced).

Layout of the ids (deterministic): 0 [PAD], 1 [UNK], then the DiMOO special tokens in
``SPECIAL_TOKENS`` order, the four prompt tags, then the words, sorted. Words are the lowercased
pre-tokens (``Whitespace``: runs of letters/digits, runs of punctuation) of every phrase of
the caption grammar and of DiMOO's system prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

from base_models.dimoo.text import SPECIAL_TOKENS, SYSTEM_PROMPT
from base_models.fashion_t2i.captions import caption_phrases

PAD, UNK = "[PAD]", "[UNK]"
PROMPT_TAGS = ("<system>", "</system>", "<user>", "</user>")


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Whitespace()


def caption_words() -> list[str]:
    """The sorted word vocabulary: lowercased pre-tokens of the grammar and the system prompt."""
    pre = _pre_tokenizer()
    words = {w for text in (*caption_phrases(), SYSTEM_PROMPT) for w, _ in pre.pre_tokenize_str(text.lower())}
    return sorted(words)


def specials() -> list[str]:
    return [spelling for spelling, _ in SPECIAL_TOKENS.values()] + list(PROMPT_TAGS)


def vocabulary() -> dict[str, int]:
    """token -> id, in the layout of the module docstring."""
    tokens = [PAD, UNK, *specials(), *caption_words()]
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer():
    """The ``tokenizers.Tokenizer``: WordLevel model, lowercase normaliser, Whitespace pre-tokeniser,
    the special tokens added (matched before normalisation); ``decode`` joins the words by spaces."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers

    tok = Tokenizer(models.WordLevel(vocabulary(), unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in [PAD, UNK, *specials()]])
    return tok


def write_tokenizer(folder: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (for transformers) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    build_tokenizer().save(str(path))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": PAD, "unk_token": UNK,
              "mask_token": SPECIAL_TOKENS["mask"][0], "model_max_length": 512}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return path
