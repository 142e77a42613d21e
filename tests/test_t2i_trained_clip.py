"""CLIPScore with the CLIP trained here (issue 13, item 6): the shipped text-to-image default's
CLIP (``base_models/fashion_t2i/weights/clip-t2i.*``, ``migm-bench train-base clip-t2i --ship``)
loaded by path through the ``clip_score`` metric, on real captioned test images
(``captions.make_split("test")``, realised size / position / tone): every image scores higher
with its own caption than with another image's, on average by a clear margin.

A CLIP that ignored the images or the text would score both alike; one that saw only the class
would still tie whenever the shuffled caption names the same class, so the margin is also
checked on the pairs whose class agrees (the other attributes must then carry it).
"""

from __future__ import annotations

import pytest
import torch

from bench.protocol import GeneratedBatch
from bench.specs import MetricContext

pytest.importorskip("open_clip")

IMAGES = 96


@pytest.fixture(scope="module")
def shipped_scorer():
    from base_models.fashion_t2i.clip import CONFIG_NAME, WEIGHTS_NAME
    from base_models.fashion_t2i.commands import SHIPPED
    from metrics.clip_score import ClipScore, load_open_clip

    return ClipScore(load_open_clip(str(SHIPPED / CONFIG_NAME), SHIPPED / WEIGHTS_NAME), batch_size=48)


@pytest.fixture(scope="module")
def captioned_test_images():
    from base_models.fashion.data import DatasetMissing
    from base_models.fashion_t2i.captions import make_split

    try:
        data = make_split("test", seed=0, limit=IMAGES)
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return data.batch(torch.arange(IMAGES))


def _scores(scorer, images, prompts) -> torch.Tensor:
    generated = GeneratedBatch(
        images=images, tokens=torch.zeros(len(images), 1, dtype=torch.long), cond=torch.zeros(len(images)),
        prompts=list(prompts),
    )  # fmt: skip
    value = scorer.compute(generated, MetricContext(model=None, device=torch.device("cpu")))
    return value.per_image


def test_the_trained_clip_scores_matching_captions_above_shuffled_ones(shipped_scorer, captioned_test_images):
    batch = captioned_test_images
    matching = _scores(shipped_scorer, batch.images, batch.captions)
    shift = torch.roll(torch.arange(IMAGES), 1)  # image i with caption i - 1: a derangement
    shuffled = _scores(shipped_scorer, batch.images, [batch.captions[int(j)] for j in shift])
    assert torch.isfinite(matching).all() and torch.isfinite(shuffled).all()
    again = _scores(shipped_scorer, batch.images, batch.captions)
    assert torch.allclose(again, matching, atol=1e-5)  # deterministic
    # on average by a clear margin, and for most single images
    assert matching.mean() > shuffled.mean() + 5.0
    assert (matching > shuffled).float().mean() > 0.9
    # where the shuffled caption names the same class, size / position / tone must decide
    same_class = batch.labels[:, 0] == batch.labels[shift, 0]
    other_attributes = (batch.labels[:, 1:] != batch.labels[shift, 1:]).any(dim=1)
    rows = same_class & other_attributes
    if int(rows.sum()) >= 3:
        assert matching[rows].mean() > shuffled[rows].mean()
