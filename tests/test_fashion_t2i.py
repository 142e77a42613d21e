"""Captioned Fashion-MNIST (base_models.fashion_t2i.captions) and its word-level tokenizer.

The images are the first test images of the Debian package (skipped when it is absent),
written to a tiny idx folder so the loaders read a few kilobytes.
"""

from __future__ import annotations

import re

import pytest
import torch

from base_models.fashion.data import load_fashion_mnist, to_model_images
from base_models.fashion_t2i.captions import (
    CLASS_WORDS,
    POSITION_PHRASES,
    POSITIONS,
    SIZE_WORDS,
    SIZES,
    TONE_ADJECTIVES,
    TONE_PHRASES,
    TONES,
    allowed_pairs,
    caption_set,
    held_out_triples,
    make_split,
    realise,
)

N_TINY = 48  # images per split of the conftest's tiny_fashion folder


def _labels(n: int, cls, size: str, position: str, tone: str) -> torch.Tensor:
    row = [SIZES.index(size), POSITIONS.index(position), TONES.index(tone)]
    return torch.cat([torch.as_tensor(cls).reshape(n, 1), torch.tensor(row).expand(n, 3)], dim=1)


def _centre_of_mass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, H, W) -> (row, col) centre of mass of each image (n,), (n,)."""
    w = x[:, 0]
    grid = torch.arange(w.shape[-1], dtype=torch.float)
    mass = w.sum((1, 2))
    return (w.sum(2) * grid).sum(1) / mass, (w.sum(1) * grid).sum(1) / mass


# ------------------------------------------------------------------ attributes on the image
def test_attributes_are_realised_on_the_image(tiny_fashion):
    garments, classes = load_fashion_mnist("test", tiny_fashion)
    n = len(classes)
    shown = {key: realise(garments, _labels(n, classes, *key)) for key in [
        ("small", "left", "normal"), ("small", "right", "normal"), ("small", "top", "normal"),
        ("small", "bottom", "normal"), ("small", "centre", "normal"), ("medium", "centre", "normal"),
        ("large", "centre", "normal"), ("large", "centre", "inverted"), ("large", "centre", "dark"),
        ("large", "centre", "bright"),
    ]}  # fmt: skip
    assert all(x.shape == (n, 1, 32, 32) and x.min() >= 0 and x.max() <= 1 for x in shown.values())
    centre = 15.5
    assert (_centre_of_mass(shown["small", "left", "normal"])[1] < centre - 5).all()
    assert (_centre_of_mass(shown["small", "right", "normal"])[1] > centre + 5).all()
    assert (_centre_of_mass(shown["small", "top", "normal"])[0] < centre - 5).all()
    assert (_centre_of_mass(shown["small", "bottom", "normal"])[0] > centre + 5).all()
    assert (_centre_of_mass(shown["small", "centre", "normal"])[1] - centre).abs().max() < 3
    lit = {s: (shown[s, "centre", "normal"] > 0.5).sum((1, 2, 3)) for s in SIZES}  # bright pixels per image
    assert (lit["small"] < lit["medium"]).all() and (lit["medium"] < lit["large"]).all()
    plain = shown["large", "centre", "normal"]
    assert torch.equal(plain, to_model_images(garments))  # the class-conditional default's framing
    assert torch.allclose(shown["large", "centre", "inverted"], 1 - plain)  # black on white
    assert shown["large", "centre", "inverted"][:, :, 0, 0].eq(1).all()
    assert torch.allclose(shown["large", "centre", "dark"], 0.45 * plain)
    bright = shown["large", "centre", "bright"]
    assert (bright >= plain).all() and bright.mean() > plain.mean() + 0.05


def test_captions_name_the_realised_attributes_and_are_reproducible(tiny_fashion):
    data = make_split("train", seed=3, root=tiny_fashion)
    index = torch.arange(len(data))
    captions = data.captions(index)
    assert captions == make_split("train", seed=3, root=tiny_fashion).captions(index)  # seeded
    assert captions != make_split("train", seed=3, epoch=1, root=tiny_fashion).captions(index)  # new draw
    assert len(set(captions)) > len(captions) * 0.9  # variety of templates and phrasing
    for text, (cls, size, pos, tone) in zip(captions, data.labels.tolist()):
        assert any(word in text for word in CLASS_WORDS[cls]), text
        if SIZES[size] != "medium":
            assert any(w and w in re.findall(r"[\w-]+", text) for w in SIZE_WORDS[size]), text
        if POSITIONS[pos] != "centre":
            side = POSITIONS[pos]
            assert side in text or {"top": "upper", "bottom": "lower"}.get(side, "-") in text, text
        if TONES[tone] != "normal":
            assert any(p and p in text for p in TONE_PHRASES[tone] + TONE_ADJECTIVES[tone]), text
        assert "  " not in text and ", ," not in text and not text.endswith(","), text
    assert all(p in POSITION_PHRASES[0] for p in ("", "in the centre"))  # the default may go unmentioned
    torch.testing.assert_close(data.batch(index[:4]).images, realise(data.garments[:4], data.labels[:4]))


# ------------------------------------------------------------------ held-out combinations
def test_held_out_triples_are_disjoint_from_training_and_keep_every_pair(tiny_fashion):
    held = held_out_triples()
    assert len(held) == 20 and all(SIZES[s] != "medium" and POSITIONS[p] != "centre" for _, s, p in held)
    seen = {(c, s, p) for c in range(10) for s, p in allowed_pairs(c, heldout=False)}
    assert not seen & held and len(seen | held) == 10 * len(SIZES) * len(POSITIONS)
    for drop in ((0, 1), (0, 2), (1, 2)):  # (class, size), (class, position), (size, position)
        pairs = {tuple(t[i] for i in drop) for t in held}
        assert pairs <= {tuple(t[i] for i in drop) for t in seen}
    train = make_split("train", root=tiny_fashion)
    heldout = make_split("heldout", root=tiny_fashion)
    test = make_split("test", root=tiny_fashion)
    assert {tuple(r[:3]) for r in train.labels.tolist()} <= seen
    assert {tuple(r[:3]) for r in test.labels.tolist()} <= seen
    assert {tuple(r[:3]) for r in heldout.labels.tolist()} <= held
    # images: the held-out and test splits use the test file, training the train file
    assert torch.equal(heldout.garments, load_fashion_mnist("test", tiny_fashion)[0])
    assert not any(torch.equal(g, h) for g in train.garments for h in heldout.garments[:8])


def test_caption_sets_reject_unknown_splits():
    with pytest.raises(ValueError, match="unknown caption split 'val'"):
        caption_set(torch.zeros(1, 28, 28, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), "val")


# ------------------------------------------------------------------ the word-level tokenizer
def test_tokenizer_round_trip_and_dimoo_loading(tiny_fashion, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from base_models.dimoo.text import SPECIAL_TOKENS, DiMOOTokenizer
    from base_models.fashion_t2i.tokenizer import PROMPT_TAGS, UNK, vocabulary, write_tokenizer

    path = write_tokenizer(tmp_path)
    tok = tokenizers.Tokenizer.from_file(str(path))
    unk = tok.token_to_id(UNK)
    pre = tokenizers.pre_tokenizers.Whitespace()
    captions = [c for split in ("train", "heldout") for c in
                make_split(split, root=tiny_fashion).captions(torch.arange(N_TINY))]  # fmt: skip
    for text in captions + ["A Photo of an Ankle Boot"]:
        ids = tok.encode(text).ids
        words = [w for w, _ in pre.pre_tokenize_str(text.lower())]
        assert unk not in ids and [tok.id_to_token(i) for i in ids] == words, text
        assert tok.decode(ids) == " ".join(words)
    assert tok.encode("a purple boot").ids[1] == unk  # an unknown word is visible as [UNK]
    assert tok.get_vocab(with_added_tokens=True) == vocabulary() and tok.get_vocab_size() < 200
    # transformers reads the same file
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    assert fast(captions[0])["input_ids"] == tok.encode(captions[0]).ids
    # DiMOO's text side: every special token found, prompts wrap the caption ids
    dimoo = DiMOOTokenizer(tmp_path)
    assert not dimoo.full_size
    for role, (spelling, _) in SPECIAL_TOKENS.items():
        assert getattr(dimoo.ids, role) == vocabulary()[spelling]
    ids = dimoo.prompt_ids(captions[0])
    body = tok.encode(captions[0]).ids
    assert ids[-len(body) - 1 : -1] == body and ids[-1] == vocabulary()[PROMPT_TAGS[3]] and unk not in ids
    assert dimoo.uncond_ids()[-2] == dimoo.ids.uncondition and unk not in dimoo.uncond_ids()
