"""Metrics of the text-to-image default read by its attribute classifier
(``base_models.fashion_t2i.attributes``; registered by ``metric_hooks_t2i``, all off by
default: the ``fashion-t2i`` model names its own default list):

  * ``attribute_accuracy`` (reference "condition"): share of images whose four predicted
    attributes (class, size, position, tone) all equal those of the image's caption, read by
    ``parse.parse_caption`` from ``GeneratedBatch.prompts``;
  * ``attr_class_accuracy``, ``attr_size_accuracy``, ``attr_position_accuracy``,
    ``attr_tone_accuracy``: one attribute each.
    All five return a ``MetricValue`` carrying the per-image 0/1 values (bootstrap intervals);
  * ``fid_attributes`` / ``kid_attributes`` (reference "data"): FID / KID (``bench.metrics``'
    ``FIDMetric`` / ``KIDMetric``) in the classifier's 128-d penultimate feature space against
    the realised images of the held-out split (all 10000 test garments with their held-out
    attribute draw, seed 0), whose features are cached as the fashion FID caches its own.

One forward of the classifier per generated batch gives the logits and the features of every
metric here (``readout``: a memo shared by all of them). Every factory raises
``MetricUnavailable`` for a model whose ``dataset`` is not "fashion-mnist-t2i" and when the
classifier weights are not there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from base_models.fashion.classifier import FashionClassifier, PenultimateFeatures
from base_models.fashion.metrics import cached_real_features
from base_models.fashion_t2i import attributes
from base_models.fashion_t2i.captions import ATTRIBUTES
from base_models.fashion_t2i.parse import parse_captions
from bench.batch_memo import BatchMemo
from bench.metrics import FIDMetric, KIDMetric, RealFeatures
from bench.protocol import GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricUnavailable, MetricValue

DATASET = "fashion-mnist-t2i"
IMAGE_SHAPE = (1, 32, 32)
CLASSIFIER = "attribute classifier"

ATTRIBUTE_ACCURACY_INFO = MetricInfo("attribute_accuracy", "fraction", True, "condition",
                                     label=f"attribute accuracy ({CLASSIFIER})")  # fmt: skip


def _attr_info(word: str) -> MetricInfo:
    return MetricInfo(
        f"attr_{word}_accuracy", "fraction", True, "condition", label=f"{word} accuracy ({CLASSIFIER})"
    )


ATTR_CLASS_INFO, ATTR_SIZE_INFO, ATTR_POSITION_INFO, ATTR_TONE_INFO = (
    _attr_info(word) for word in ("class", "size", "position", "tone")
)  # one per column of ATTRIBUTES
ATTR_INFOS = dict(zip(ATTRIBUTES, (ATTR_CLASS_INFO, ATTR_SIZE_INFO, ATTR_POSITION_INFO, ATTR_TONE_INFO)))
FID_INFO = MetricInfo("fid_attributes", "", False, "data", label=f"FID ({CLASSIFIER})")
KID_INFO = MetricInfo("kid_attributes", "", False, "data", label=f"KID ({CLASSIFIER})")


def weights_path() -> Path:
    """The classifier weights the metrics load (tests point it elsewhere)."""
    return attributes.SHIPPED_WEIGHTS


def missing_weights() -> str | None:
    """Why the metrics cannot run here (no classifier weights), or None."""
    path = weights_path()
    if path.is_file():
        return None
    return f"attribute classifier weights not found: {path}; train them with `{attributes.TRAIN_COMMAND}`"


def require_t2i(model, metric: str) -> None:
    dataset = getattr(model, "dataset", None)
    if dataset != DATASET:
        raise MetricUnavailable(f"{metric} needs the fashion-t2i model (dataset={DATASET!r}); base model "
                                f"{getattr(model, 'name', model)!r} has dataset={dataset!r}")  # fmt: skip


@functools.lru_cache(maxsize=2)
def _cached_classifier(path: str, mtime_ns: int) -> FashionClassifier:
    return attributes.load_attribute_classifier(path)


def classifier_for(model, metric: str) -> FashionClassifier:
    """The attribute classifier (loaded once per file version) after the model check."""
    require_t2i(model, metric)
    reason = missing_weights()
    if reason is not None:
        raise MetricUnavailable(f"{metric}: {reason}")
    path = weights_path()
    return _cached_classifier(str(path), path.stat().st_mtime_ns)


# ---------------------------------------------------------------------------- one forward per batch


@dataclass(frozen=True)
class Readout:
    """The classifier on one generated batch: features (n, 128) float64, predicted (n, 4) labels."""

    features: Tensor
    predicted: Tensor


_READOUT = BatchMemo()  # shared by every metric of this module: one forward per (batch, classifier)


def readout(classifier: FashionClassifier, generated: GeneratedBatch, metric: str) -> Readout:
    return _READOUT.get((generated, classifier), lambda: _forward(classifier, generated, metric))


@torch.no_grad()
def _forward(classifier: FashionClassifier, generated: GeneratedBatch, metric: str) -> Readout:
    images = generated.images.detach().float().cpu()
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{metric}: expected images (n, 1, 32, 32), got {tuple(images.shape)}")
    classifier.eval()
    features = torch.cat([classifier.features(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    return Readout(features.double(), attributes.predict(classifier.fc(features)))  # (n, 128), (n, 4)


# ---------------------------------------------------------------------------- accuracy


class AttributeAccuracy:
    """Share of images whose predicted attributes ``columns`` (indices into ``ATTRIBUTES``)
    all equal their caption's; a ``MetricValue`` with the per-image 0/1 values."""

    def __init__(self, info: MetricInfo, classifier: FashionClassifier, columns: tuple[int, ...]) -> None:
        self.info = info
        self.classifier = classifier
        self.columns = list(columns)
        self._wanted = BatchMemo()  # the batch's captions, parsed once

    def wanted(self, generated: GeneratedBatch) -> Tensor:
        """(n, 4) labels of the captions in ``generated.prompts``."""
        if generated.prompts is None or len(generated.prompts) != len(generated.images):
            raise ValueError(f"{self.info.name}: needs one caption per image in GeneratedBatch.prompts")
        return self._wanted.get((generated,), lambda: parse_captions(list(generated.prompts)))

    def per_image(self, generated: GeneratedBatch, ctx: MetricContext) -> Tensor:
        """(n,) 1.0 where every attribute of ``columns`` matches the caption, else 0.0."""
        wanted = self.wanted(generated)
        predicted = readout(self.classifier, generated, self.info.name).predicted
        return (predicted[:, self.columns] == wanted[:, self.columns]).all(1).double()

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> MetricValue:
        values = self.per_image(generated, ctx)
        return MetricValue(float(values.mean()), values)


def _attribute_accuracy(model) -> AttributeAccuracy:
    info = ATTRIBUTE_ACCURACY_INFO
    return AttributeAccuracy(info, classifier_for(model, info.name), tuple(range(len(ATTRIBUTES))))


def _one_attribute(attribute: str):
    def factory(model) -> AttributeAccuracy:
        info = ATTR_INFOS[attribute]
        return AttributeAccuracy(info, classifier_for(model, info.name), (ATTRIBUTES.index(attribute),))

    return factory


_attr_class_accuracy = _one_attribute("cls")
_attr_size_accuracy = _one_attribute("size")
_attr_position_accuracy = _one_attribute("position")
_attr_tone_accuracy = _one_attribute("tone")


# ---------------------------------------------------------------------------- FID / KID


@functools.lru_cache(maxsize=2)
def heldout_images(root: str | None = None) -> Tensor:
    """(10000, 1, 32, 32) in [0, 1]: every test garment with its held-out attributes (seed 0)."""
    from base_models.fashion_t2i.captions import make_split

    data = make_split("heldout", seed=0, epoch=0, root=root)
    return torch.cat([data.batch(torch.arange(i, min(i + 1000, len(data)))).images
                      for i in range(0, len(data), 1000)])  # fmt: skip


def real_heldout_features(classifier: FashionClassifier, cache_dir: Path | None = None) -> RealFeatures:
    """RealFeatures of the realised held-out split; the key holds the classifier's weights hash
    and a hash of the data folder (``base_models.fashion.metrics.cached_real_features``)."""
    return cached_real_features(
        "fashion-t2i-heldout-{root}-attributes-{weights}", heldout_images, classifier, cache_dir
    )


class _ReadoutFeatures:
    """Mixin for ``FIDMetric`` / ``KIDMetric``: the generated images' features come from the
    shared ``readout`` (one classifier forward for every metric here); ``INFO`` names the metric."""

    INFO: MetricInfo

    def __init__(self, classifier: FashionClassifier, real: RealFeatures) -> None:
        super().__init__(self.INFO, PenultimateFeatures(classifier), real)
        self.classifier = classifier

    def features(self, generated: GeneratedBatch) -> Tensor:
        if len(generated.images) < 2:
            raise ValueError(
                f"{self.info.name}: needs at least 2 generated images, got {len(generated.images)}"
            )
        return readout(self.classifier, generated, self.info.name).features  # (n, 128) float64


class AttributeFID(_ReadoutFeatures, FIDMetric):
    INFO = FID_INFO


class AttributeKID(_ReadoutFeatures, KIDMetric):
    INFO = KID_INFO


def _fid_attributes(model) -> AttributeFID:
    clf = classifier_for(model, FID_INFO.name)
    return AttributeFID(clf, real_heldout_features(clf))


def _kid_attributes(model) -> AttributeKID:
    clf = classifier_for(model, KID_INFO.name)
    return AttributeKID(clf, real_heldout_features(clf))
