"""The small text-to-image CLIP (base_models.fashion_t2i.clip): a 3-step training run on a tiny
config through the CLI entry, its output loaded by the ``clip_score`` metric from the
environment, and the evaluation rules on a hand-made oracle."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import pytest
import torch
from torch import nn

from base_models.fashion_t2i.captions import CLASS_WORDS, class_prompt, make_split
from bench.protocol import GeneratedBatch
from bench.specs import MetricContext

open_clip = pytest.importorskip("open_clip")

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _run(argv: list[str]) -> int:
    from base_models.fashion_t2i.commands import add_clip_arguments, run_clip

    return run_clip(add_clip_arguments(argparse.ArgumentParser()).parse_args(argv))


def test_clip_trains_and_its_weights_score_through_clip_score(tiny_fashion, tmp_path, monkeypatch, capsys):
    from base_models.fashion_t2i.clip import CONFIG_NAME, WEIGHTS_NAME, build_clip
    from metrics.clip_score import clip_score_metric

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--work", str(tmp_path / "work"), "--data", str(tiny_fashion), "--steps", "3",
            "--batch-size", "16", "--eval-images", "20", "--config", str(config)]  # fmt: skip
    assert _run(argv) == 0
    meta = json.loads(capsys.readouterr().out)
    assert math.isfinite(meta["final_loss"]) and meta["settings"]["steps"] == 3
    assert json.loads((out / CONFIG_NAME).read_text()) == TINY
    scores = meta["evaluation"]
    assert meta["evaluation"]["test_images"] == 20
    assert all(0 <= scores[k] <= 1 for k in scores if k.endswith("accuracy") or "accuracy_" in k)

    # the metric, configured exactly as a user would, loads the trained network
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(out / WEIGHTS_NAME))
    monkeypatch.setenv("MIGM_CLIP_MODEL", str(out / CONFIG_NAME))

    class Model:
        name = "fashion-t2i"

        def condition_prompts(self, cond):
            return [class_prompt(int(c)) for c in cond]

    metric = clip_score_metric(Model())
    data = make_split("heldout", root=tiny_fashion).batch(torch.arange(4))
    generated = GeneratedBatch(images=data.images, tokens=torch.zeros(4, 1, dtype=torch.long),
                               cond=data.labels[:, 0], prompts=data.captions)  # fmt: skip
    value = metric.compute(generated, MetricContext(model=None, device=torch.device("cpu")))
    assert torch.isfinite(value.per_image).all() and (value.per_image >= 0).all()
    # trained: the loaded weights are not the initialisation
    init = build_clip(TINY, seed=0).state_dict()
    loaded = metric.scorer.model.state_dict()
    assert set(init) == set(loaded) and any(not torch.equal(init[k], loaded[k]) for k in init)


class _Oracle(nn.Module):
    """encode_image: one-hot of the image's constant grey level k/10; encode_text: one-hot of
    the class named by the prompt (its ids are the class index)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def encode_image(self, pixels):
        from metrics.common import CLIP_MEAN, CLIP_STD

        grey = pixels[:, 0].mean((1, 2)) * CLIP_STD[0] + CLIP_MEAN[0]  # undo the normalisation
        return nn.functional.one_hot((grey * 10).round().long(), 10).float()

    def encode_text(self, tokens):
        return nn.functional.one_hot(tokens[:, 0], 10).float()


def test_zero_shot_accuracy_counts_the_most_similar_class_prompt():
    from base_models.fashion_t2i.clip import zero_shot_accuracy
    from metrics.clip_score import OpenClipScorer

    def tokenizer(texts):
        return torch.tensor([[[class_prompt(c) for c in range(10)].index(t)] for t in texts])

    scorer = OpenClipScorer(_Oracle(), tokenizer, 32)
    classes = torch.tensor([0, 3, 5, 9, 2, 7])
    images = (classes.float() / 10).view(-1, 1, 1, 1).expand(-1, 1, 32, 32)
    assert zero_shot_accuracy(scorer, images, classes, batch_size=4) == 1.0
    wrong = classes.clone()
    wrong[:3] = (wrong[:3] + 1) % len(CLASS_WORDS)
    assert zero_shot_accuracy(scorer, images, wrong, batch_size=4) == 0.5


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tiny_fashion, tmp_path):
    from base_models.fashion_t2i.clip import ClipTrainSettings, load_clip, train_clip

    quiet = {"log": lambda message: None, "config": TINY, "data_root": tiny_fashion}
    settings = ClipTrainSettings(steps=2, batch_size=8, checkpoint_every=1)
    straight = train_clip(tmp_path / "straight", tmp_path / "w1", settings, **quiet)
    assert straight["resumed_from"] == 0
    # a run stopped after its step-1 checkpoint: the next run starts there and ends identical
    (tmp_path / "w2").mkdir()
    shutil.copy(tmp_path / "w1" / "clip-t2i.ckpt", tmp_path / "w2" / "clip-t2i.ckpt")
    resumed = train_clip(tmp_path / "resumed", tmp_path / "w2", settings, **quiet)
    assert resumed["resumed_from"] == 1 and resumed["final_loss"] == straight["final_loss"]
    a, b = (load_clip(tmp_path / d).model.state_dict() for d in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_caption_retrieval_counts_hits_per_group(tiny_fashion):
    from base_models.fashion_t2i.clip import caption_retrieval_accuracy
    from metrics.clip_score import OpenClipScorer

    class Blind(_Oracle):  # every image and caption alike: ties resolve to each group's first caption
        def encode_image(self, pixels):
            return torch.ones(len(pixels), 4)

        def encode_text(self, tokens):
            return torch.ones(len(tokens), 4)

    scorer = OpenClipScorer(Blind(), lambda texts: torch.zeros(len(texts), 1, dtype=torch.long), 32)
    data = make_split("heldout", root=tiny_fashion)  # 32 examples: 4 groups of 8 (the rest unused)
    assert caption_retrieval_accuracy(scorer, data, group=8) == pytest.approx(1 / 8)
    assert caption_retrieval_accuracy(scorer, data, group=1) == 1.0


def test_cli_options_fit_beside_train_base_and_choose_the_output_folder(tmp_path):
    from base_models.fashion_t2i.commands import SHIPPED, add_clip_arguments, add_clip_options, clip_out

    own = add_clip_arguments(argparse.ArgumentParser())
    assert clip_out(own.parse_args(["--work", str(tmp_path)])) == tmp_path / "clip-t2i"
    assert clip_out(own.parse_args(["--ship"])) == SHIPPED
    assert clip_out(own.parse_args(["--ship", "--out", str(tmp_path)])) == tmp_path
    train_base = argparse.ArgumentParser()  # `migm-bench train-base`'s shared options already there
    for flag in ("--out", "--work", "--data", "--steps", "--batch-size", "--seed"):
        train_base.add_argument(flag)
    args = add_clip_options(train_base).parse_args(["--eval-images", "0", "--train-limit", "5"])
    assert (args.eval_images, args.train_limit, args.config) == (0, 5, None)


def test_the_longest_caption_fits_the_text_context():
    from base_models.fashion_t2i import captions as grammar
    from base_models.fashion_t2i.clip import CLIP_T2I_CONFIG, clip_tokenizer

    def longest(table):
        return max((p for options in table for p in options), key=len)

    slots = {
        "cls": grammar.CLASS_WORDS,
        "size": grammar.SIZE_WORDS,
        "pos": grammar.POSITION_PHRASES,
        "pos_adj": grammar.POSITION_ADJECTIVES,
        "tone": grammar.TONE_PHRASES,
        "tone_adj": grammar.TONE_ADJECTIVES,
    }
    texts = [grammar._tidy(t.format(**{k: longest(v) for k, v in slots.items()})) for t in grammar.TEMPLATES]
    tokens = clip_tokenizer(CLIP_T2I_CONFIG)(texts)  # (templates, context); 0 = padding
    assert (tokens[:, -1] == 0).all()  # nothing truncated: the end-of-text token fits with room left
