"""Captioned Fashion-MNIST: a small grammar whose attributes are realised on the image.

Every example is (image, caption, attribute labels). The attributes are drawn per example and
*applied to the image* before the caption names them, so a model that ignores part of the
prompt produces visibly wrong images:

* class (the Fashion-MNIST label), named by one of its synonyms ("ankle boot", "boot");
* size: the 28x28 garment rescaled to a side of ``SIZE_PIXELS`` (small 12, medium 20, large 28);
* position in the 32x32 frame: centre, or pushed against the left / right / top / bottom edge
  (the free room is 32 - side: 20 px for small, 12 for medium, 4 for large);
* tone: normal (white on black, as the dataset), dark (x 0.45), bright (gamma 0.5), inverted
  (1 - x over the whole frame: black on white).

The default values (medium, centre, normal) may go unmentioned; the others are always named.
Medium, centred and normal is a 20-pixel garment, unlike the class-conditional default's 28.
(large, centre, normal) is exactly ``base_models.fashion.data.to_model_images`` (28 px padded by 2).

Held-out combinations (the evaluation split): 20 of the 150 (class, size, position) triples
never occur in training. Class c holds out (size A, position P[c mod 4]) and (size B,
position P[(c + 2) mod 4]), where (A, B) = (small, large) for even c and (large, small) for odd
c, and P = (left, right, top, bottom). Every (class, size), (class, position) and (size,
position) pair still occurs in training, so the split tests composition, not unseen words.

Splits (``make_split``): ``train`` = train images x seen triples; ``test`` = test images x seen
triples; ``heldout`` = test images x held-out triples. Attributes, phrasing and template of
every example come from a ``torch.Generator`` seeded by (seed, split, epoch): reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from base_models.fashion.data import load_fashion_mnist

FRAME = 32
SIZES = ("small", "medium", "large")
SIZE_PIXELS = (12, 20, 28)  # side of the rescaled 28x28 garment, per size
POSITIONS = ("centre", "left", "right", "top", "bottom")
TONES = ("normal", "dark", "bright", "inverted")
DARK_FACTOR = 0.45
BRIGHT_GAMMA = 0.5
ATTRIBUTES = ("cls", "size", "position", "tone")  # columns of the (n, 4) label tensor
SPLITS = ("train", "test", "heldout")

# ------------------------------------------------------------------ the grammar
CLASS_WORDS = (
    ("t-shirt", "tee", "top"),
    ("pair of trousers", "pair of pants", "pair of slacks"),
    ("pullover", "sweater", "jumper"),
    ("dress", "frock"),
    ("coat", "jacket"),
    ("sandal", "summer sandal"),
    ("shirt", "button-up shirt", "blouse"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot"),
)  # first word: the zero-shot class prompt
SIZE_WORDS = (("small", "tiny", "little"), ("", "medium-sized"), ("large", "big", "huge"))
POSITION_PHRASES = (
    ("", "in the centre", "in the middle"),
    ("on the left", "on the left side"),
    ("on the right", "on the right side"),
    ("at the top", "near the top"),
    ("at the bottom", "near the bottom"),
)
POSITION_ADJECTIVES = (("", "centred"), ("left-side",), ("right-side",), ("upper",), ("lower",))
TONE_ADJECTIVES = (("",), ("dark", "dim"), ("bright", "glowing"), ("inverted", "negative"))
TONE_PHRASES = (
    ("", "white on black"),
    ("in dark grey", "dimly lit"),
    ("in bright white", "brightly lit"),
    ("inverted", "black on white", "on a white background"),
)
ARTICLE = "@A@"  # replaced by "a" / "an" from the next word
TEMPLATES = (
    "@A@ {size} {tone_adj} {cls} {pos}",
    "a photo of @A@ {size} {cls} {pos}, {tone}",
    "{pos_adj} {size} {cls}, {tone}",
    "@A@ {tone_adj} {cls}, {size}, {pos}",
    "an image of @A@ {size} {tone_adj} {cls} {pos}",
    "{cls} {pos}, {size}, {tone}",
)
ZERO_SHOT_TEMPLATE = "a photo of @A@ {cls}"


def _tidy(text: str) -> str:
    """Articles by the next word's first letter; blanks of unmentioned attributes removed."""
    text = re.sub(
        rf"{ARTICLE}\s+(\w)", lambda m: ("an " if m.group(1) in "aeiou" else "a ") + m.group(1), text
    )
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s*,(\s*,)*\s*", ", ", text)  # ", ," left by an empty slot -> ", "
    return text.strip(" ,")


def class_prompt(cls: int) -> str:
    """'a photo of an ankle boot': the zero-shot prompt of class ``cls`` (its first synonym)."""
    return _tidy(ZERO_SHOT_TEMPLATE.format(cls=CLASS_WORDS[cls][0]))


def _pick(options: tuple[str, ...], gen: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=gen))]


def render_caption(labels: Tensor, gen: torch.Generator) -> str:
    """labels (4,) = (class, size, position, tone) indices -> a caption, phrasing drawn from ``gen``."""
    cls, size, pos, tone = (int(v) for v in labels)
    template = _pick(TEMPLATES, gen)
    words = {
        "cls": _pick(CLASS_WORDS[cls], gen),
        "size": _pick(SIZE_WORDS[size], gen),
        "pos": _pick(POSITION_PHRASES[pos], gen),
        "pos_adj": _pick(POSITION_ADJECTIVES[pos], gen),
        "tone": _pick(TONE_PHRASES[tone], gen),
        "tone_adj": _pick(TONE_ADJECTIVES[tone], gen),
    }
    return _tidy(template.format(**words))


def caption_phrases() -> list[str]:
    """Every fixed string the grammar can emit (templates without slots, all phrase options):
    the word-level tokenizer's vocabulary is built from these."""
    tables = (CLASS_WORDS, SIZE_WORDS, POSITION_PHRASES, POSITION_ADJECTIVES, TONE_ADJECTIVES, TONE_PHRASES)
    phrases = [p for table in tables for options in table for p in options if p]
    fixed = [re.sub(r"\{\w+\}", " ", t).replace(ARTICLE, "a an") for t in (*TEMPLATES, ZERO_SHOT_TEMPLATE)]
    return fixed + phrases


# ------------------------------------------------------------------ held-out combinations
def held_out_triples() -> frozenset[tuple[int, int, int]]:
    """The 20 (class, size, position) triples never seen in training (rule in the module doc)."""
    small, large = SIZES.index("small"), SIZES.index("large")
    edges = [POSITIONS.index(p) for p in ("left", "right", "top", "bottom")]
    out = set()
    for c in range(len(CLASS_WORDS)):
        first, second = (small, large) if c % 2 == 0 else (large, small)
        out |= {(c, first, edges[c % 4]), (c, second, edges[(c + 2) % 4])}
    return frozenset(out)


def allowed_pairs(cls: int, heldout: bool) -> list[tuple[int, int]]:
    """(size, position) pairs of class ``cls`` in the held-out split (``heldout``) or the seen one."""
    held = held_out_triples()
    pairs = [(s, p) for s in range(len(SIZES)) for p in range(len(POSITIONS))]
    return [(s, p) for s, p in pairs if ((cls, s, p) in held) == heldout]


# ------------------------------------------------------------------ the image transform
def realise(images: Tensor, labels: Tensor) -> Tensor:
    """uint8 (n, 28, 28) garments + labels (n, 4) -> float (n, 1, 32, 32) in [0, 1] showing the
    labels' size, position and tone (the class is the garment itself)."""
    x = images.float().div(255.0)[:, None]  # (n, 1, 28, 28)
    out = torch.zeros(len(images), 1, FRAME, FRAME)
    for size, side in enumerate(SIZE_PIXELS):
        rows = (labels[:, 1] == size).nonzero().flatten()
        if len(rows) == 0:
            continue
        scaled = (
            x[rows]
            if side == x.shape[-1]
            else F.interpolate(
                x[rows], size=(side, side), mode="bilinear", antialias=True, align_corners=False
            )
        )  # fmt: skip  (n_s, 1, side, side)
        room = FRAME - side
        for k, i in enumerate(rows.tolist()):
            top, left = _offset(int(labels[i, 2]), room)
            out[i, :, top : top + side, left : left + side] = scaled[k]
    return _apply_tone(out.clamp(0, 1), labels[:, 3])


def _offset(position: int, room: int) -> tuple[int, int]:
    """(top, left) corner of the garment for ``position`` with ``room`` free pixels per axis."""
    centre = room // 2
    return {
        "centre": (centre, centre), "left": (centre, 0), "right": (centre, room),
        "top": (0, centre), "bottom": (room, centre),
    }[POSITIONS[position]]  # fmt: skip


def _apply_tone(x: Tensor, tone: Tensor) -> Tensor:
    """(n, 1, 32, 32) white-on-black frames -> each in its tone (dark, bright, inverted)."""
    out = x.clone()
    dark, bright, inverted = (tone == TONES.index(t) for t in ("dark", "bright", "inverted"))
    out[dark] = x[dark] * DARK_FACTOR
    out[bright] = x[bright].pow(BRIGHT_GAMMA)
    out[inverted] = 1.0 - x[inverted]
    return out


# ------------------------------------------------------------------ data sets
def _generator(seed: int, split: str, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + SPLITS.index(split) * 10_007 + epoch)


def sample_labels(classes: Tensor, heldout: bool, gen: torch.Generator) -> Tensor:
    """classes (n,) -> labels (n, 4): size and position uniform over the class's allowed pairs,
    tone uniform."""
    pairs = [allowed_pairs(c, heldout) for c in range(len(CLASS_WORDS))]
    counts = torch.tensor([len(p) for p in pairs])
    table = torch.zeros(len(pairs), int(counts.max()), 2, dtype=torch.long)  # (classes, k_max, 2) padded
    for c, class_pairs in enumerate(pairs):
        table[c, : len(class_pairs)] = torch.tensor(class_pairs)
    pick = (torch.rand(len(classes), generator=gen) * counts[classes]).long()  # (n,) index into the pairs
    size_pos = table[classes, pick]  # (n, 2)
    tone = torch.randint(len(TONES), (len(classes),), generator=gen)
    return torch.cat([classes[:, None], size_pos, tone[:, None]], dim=1)


def sample_any_labels(classes: Tensor, gen: torch.Generator) -> Tensor:
    """classes (n,) -> labels (n, 4) with size, position and tone uniform over *every*
    combination, the held-out ones included: for instruments that read attributes off images
    (the attribute classifier), which must not learn the split's gaps as cues."""
    size = torch.randint(len(SIZES), (len(classes),), generator=gen)
    position = torch.randint(len(POSITIONS), (len(classes),), generator=gen)
    tone = torch.randint(len(TONES), (len(classes),), generator=gen)
    return torch.stack([classes.long(), size, position, tone], dim=1)


@dataclass(frozen=True)
class CaptionBatch:
    """images (b, 1, 32, 32) in [0, 1]; captions: b strings; labels (b, 4) long (``ATTRIBUTES``)."""

    images: Tensor
    captions: list[str]
    labels: Tensor


@dataclass(frozen=True)
class CaptionSet:
    """A captioned split: garments uint8 (n, 28, 28), labels (n, 4), one phrasing seed each;
    ``epoch`` names the draw (training draws new attributes every epoch)."""

    split: str
    epoch: int
    garments: Tensor
    labels: Tensor
    caption_seeds: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def captions(self, index: Tensor) -> list[str]:
        return [
            render_caption(self.labels[i], torch.Generator().manual_seed(int(self.caption_seeds[i])))
            for i in index.tolist()
        ]

    def batch(self, index: Tensor) -> CaptionBatch:
        """The examples at ``index`` (b,): images realised, captions rendered (same every call)."""
        return CaptionBatch(realise(self.garments[index], self.labels[index]), self.captions(index),
                            self.labels[index])  # fmt: skip


def caption_set(garments: Tensor, classes: Tensor, split: str, seed: int = 0, epoch: int = 0) -> CaptionSet:
    """Attributes and phrasing for every garment of ``split`` (seeded by seed, split, epoch)."""
    if split not in SPLITS:
        raise ValueError(f"unknown caption split {split!r}; choose one of {', '.join(SPLITS)}")
    gen = _generator(seed, split, epoch)
    labels = sample_labels(classes.long(), split == "heldout", gen)
    seeds = torch.randint(2**62, (len(classes),), generator=gen)
    return CaptionSet(split, epoch, garments, labels, seeds)


def make_split(split: str, seed: int = 0, epoch: int = 0, root=None, limit: int | None = None) -> CaptionSet:
    """``train`` (train images, seen triples), ``test`` (test images, seen triples) or
    ``heldout`` (test images, held-out triples); ``limit``: the first n images only."""
    images, classes = load_fashion_mnist("train" if split == "train" else "test", root)
    if limit is not None:
        images, classes = images[:limit], classes[:limit]
    return caption_set(images, classes, split, seed, epoch)
