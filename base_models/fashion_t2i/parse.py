"""Read a caption of the grammar back into its labels: the exact inverse of ``render_caption``.

Matching words would be fragile: "top" is a t-shirt synonym and part of "at the top" / "near
the top", "shirt" is inside "t-shirt" and "button-up shirt", "boot" inside "ankle boot",
"inverted" both a tone adjective and a tone phrase. So the parser does not match words: it
renders every caption the grammar can emit (every template, every option of every slot, for
each of the 10 x 3 x 5 x 4 label combinations, ~100k strings, ~0.6 s once) through the same
``_tidy`` step as ``render_caption`` and looks the caption up. Building the table also checks
that the grammar is unambiguous: two label sets rendering one caption is an error.
"""

from __future__ import annotations

import functools
import itertools
import string

import torch
from torch import Tensor

from base_models.fashion_t2i.captions import (
    CLASS_WORDS,
    POSITION_ADJECTIVES,
    POSITION_PHRASES,
    SIZE_WORDS,
    TEMPLATES,
    TONE_ADJECTIVES,
    TONE_PHRASES,
    _tidy,
)

Labels = tuple[int, int, int, int]  # (class, size, position, tone), as ``captions.ATTRIBUTES``


def _slot_options(labels: Labels) -> dict[str, tuple[str, ...]]:
    """Every phrasing of each template slot for ``labels`` (the tables ``render_caption`` picks from)."""
    cls, size, pos, tone = labels
    return {
        "cls": CLASS_WORDS[cls],
        "size": SIZE_WORDS[size],
        "pos": POSITION_PHRASES[pos],
        "pos_adj": POSITION_ADJECTIVES[pos],
        "tone": TONE_PHRASES[tone],
        "tone_adj": TONE_ADJECTIVES[tone],
    }


def _all_labels() -> list[Labels]:
    shape = (len(CLASS_WORDS), len(SIZE_WORDS), len(POSITION_PHRASES), len(TONE_PHRASES))
    return list(itertools.product(*(range(n) for n in shape)))


@functools.lru_cache(maxsize=1)
def caption_table() -> dict[str, Labels]:
    """caption -> labels for every caption the grammar can emit; ValueError if one is ambiguous."""
    table: dict[str, Labels] = {}
    for template in TEMPLATES:
        slots = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        for labels in _all_labels():
            options = _slot_options(labels)
            for words in itertools.product(*(options[s] for s in slots)):
                caption = _tidy(template.format(**dict(zip(slots, words))))
                if table.setdefault(caption, labels) != labels:
                    raise ValueError(f"ambiguous grammar: {caption!r} renders {table[caption]} and {labels}")
    return table


def parse_caption(text: str) -> Tensor:
    """A caption of the grammar -> labels (4,) long = (class, size, position, tone); unmentioned
    size / position / tone read as medium / centre / normal. ValueError for any other text."""
    labels = caption_table().get(text)
    if labels is None:
        raise ValueError(f"not a caption of the fashion-t2i grammar: {text!r}")
    return torch.tensor(labels, dtype=torch.long)


def parse_captions(texts: list[str]) -> Tensor:
    """captions (n strings) -> labels (n, 4) long."""
    if not texts:
        return torch.zeros(0, 4, dtype=torch.long)
    return torch.stack([parse_caption(t) for t in texts])
