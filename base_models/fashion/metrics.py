"""Quality metrics of the embedded Fashion-MNIST default (registered by
``base_models.fashion.metric_hooks``, which names the infos and factories below):

  * ``fid`` / ``kid`` (reference "data"): FID and KID of the generated images against the
    10k Fashion-MNIST test images, in the 128-d penultimate feature space of the shipped
    classifier (``base_models.fashion.classifier``) instead of Inception-v3. Real
    features are computed once and cached in ``MetricContext.cache`` and on disk
    (~/.cache/migm-bench/real_features/, keyed by the classifier's weights hash).
  * ``class_accuracy`` (reference "condition"): fraction of images the classifier puts in
    the class they were generated for.
  * ``inception_score`` (reference "data"): IS (Salimans et al. 2016) from the classifier's
    logits, one split over all images; 1 (useless) .. 10 (confident and all classes).
  * the generic vanilla-fidelity metrics of ``bench.metrics``: ``psnr_vs_vanilla``,
    ``ssim_vs_vanilla``, ``token_agreement``, ``feature_cosine``.

FID/KID/accuracy/IS need 1x32x32 images of Fashion-MNIST, so their factories raise
``MetricUnavailable`` for any base model whose ``BaseModel.dataset`` is not "fashion-mnist", and when
the classifier weights or the test split are missing.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from base_models.fashion.classifier import (
    DEFAULT_WEIGHTS,
    ClassifierWeightsMissing,
    FashionClassifier,
    PenultimateFeatures,
    load_classifier,
)
from bench.batch_memo import BatchMemo
from bench.metrics import FIDMetric, KIDMetric, RealFeatures, inception_score, require_dataset
from bench.protocol import BaseModel, GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricUnavailable

DATASET = "fashion-mnist"
IMAGE_SHAPE = (1, 32, 32)

# labels name the feature network: these are not Inception FID / KID / IS
FID_INFO = MetricInfo("fid", "", False, "data", label="FID (Fashion classifier)")
KID_INFO = MetricInfo("kid", "", False, "data", label="KID (Fashion classifier)")
CLASS_ACCURACY_INFO = MetricInfo(
    "class_accuracy", "fraction", True, "condition", label="class accuracy (Fashion classifier)"
)
INCEPTION_SCORE_INFO = MetricInfo("inception_score", "", True, "data", label="IS (Fashion classifier)")


def require_fashion(model: BaseModel, metric: str) -> None:
    """MetricUnavailable unless ``model`` declares it generates Fashion-MNIST (``BaseModel.dataset``)."""
    require_dataset(model, DATASET, metric, needs="a Fashion-MNIST model (1x32x32 grayscale)")


@functools.lru_cache(maxsize=4)
def _cached_classifier(path: str, mtime_ns: int) -> FashionClassifier:
    return load_classifier(path)


def classifier_for_metrics(path: str | Path | None = None) -> FashionClassifier:
    """The shipped classifier (loaded once per file version); MetricUnavailable when the
    file does not exist, the loader's error (naming the file) when it is broken."""
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    try:
        return _cached_classifier(str(path), path.stat().st_mtime_ns if path.is_file() else 0)
    except ClassifierWeightsMissing as e:
        raise MetricUnavailable(str(e)) from e


@functools.lru_cache(maxsize=2)
def _test_images(root: str) -> Tensor:
    from base_models.fashion.data import load_fashion_mnist, to_model_images

    images, _ = load_fashion_mnist("test", root)
    return to_model_images(images)  # (10000, 1, 32, 32) in [0, 1]


def real_test_features(classifier: FashionClassifier, cache_dir: Path | None = None) -> RealFeatures:
    """RealFeatures of the test split in the classifier's feature space. The cache key holds
    the classifier's weights hash and (a hash of) the data folder."""
    return cached_real_features(
        "fashion-mnist-test-{root}-classifier-{weights}", _test_images, classifier, cache_dir
    )


def cached_real_features(
    key: str, images: Callable[[str], Tensor], classifier: FashionClassifier, cache_dir: Path | None = None
) -> RealFeatures:
    """RealFeatures of ``images(root)`` (root: the resolved Fashion-MNIST folder) in the
    classifier's penultimate space, cached under ``key`` with ``{root}`` (a hash of the folder)
    and ``{weights}`` (the classifier's weights hash) filled in. MetricUnavailable now when
    nothing is cached and the data set is missing, not in the middle of a run."""
    from base_models.fashion.data import DatasetMissing, data_root

    root = str(data_root().resolve())
    key = key.format(root=hashlib.sha256(root.encode()).hexdigest()[:8], weights=classifier.weights_hash)
    real = RealFeatures(key, lambda: images(root), PenultimateFeatures(classifier), cache_dir=cache_dir)
    if real.disk_path is None or not real.disk_path.is_file():
        try:
            images(root)
        except DatasetMissing as e:
            raise MetricUnavailable(str(e)) from e
    return real


def _images_of(generated: GeneratedBatch, metric: str) -> Tensor:
    images = generated.images
    if tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{metric}: expected images (n, 1, 32, 32), got {tuple(images.shape)}")
    return images.detach().float().cpu()


def _fid(model: BaseModel) -> FIDMetric:
    require_fashion(model, "fid")
    clf = classifier_for_metrics()
    return FIDMetric(FID_INFO, PenultimateFeatures(clf), real_test_features(clf))


def _kid(model: BaseModel) -> KIDMetric:
    require_fashion(model, "kid")
    clf = classifier_for_metrics()
    return KIDMetric(KID_INFO, PenultimateFeatures(clf), real_test_features(clf))


class _ClassifierMetric:
    """Shared: classifier logits of the generated images (CPU, batches of 1000)."""

    info: MetricInfo

    def __init__(self, classifier: FashionClassifier) -> None:
        self.classifier = classifier
        self._memo = BatchMemo()  # compute() and the interval classify the same batch once

    def logits(self, generated: GeneratedBatch) -> Tensor:
        return self._memo.get((generated,), lambda: self._classify(generated))

    @torch.no_grad()
    def _classify(self, generated: GeneratedBatch) -> Tensor:
        images = _images_of(generated, self.info.name)
        self.classifier.eval()
        return torch.cat(
            [self.classifier(images[i : i + 1000]) for i in range(0, len(images), 1000)]
        )  # (n, 10)


class ClassAccuracy(_ClassifierMetric):
    """Fraction of generated images whose classifier argmax equals the requested class."""

    info = CLASS_ACCURACY_INFO

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        return float(self.per_image(generated, ctx).mean())

    def per_image(self, generated: GeneratedBatch, ctx: MetricContext) -> Tensor:
        """(n,) 1.0 where the classifier's argmax is the requested class, else 0.0."""
        logits = self.logits(generated)
        cond = generated.cond.detach().cpu().long().reshape(-1)
        if cond.shape != (len(logits),):
            raise ValueError(
                f"class_accuracy: need one class label per image, got cond of shape {tuple(generated.cond.shape)}"
            )
        return (logits.argmax(1) == cond).double()


class InceptionScore(_ClassifierMetric):
    """IS from the classifier's class posterior (one split)."""

    info = INCEPTION_SCORE_INFO

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        return inception_score(self.logits(generated))

    def resampled(self, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray) -> list[float]:
        """IS of each image resample, indices (R, n) (``bench.metrics.metric_interval``)."""
        logits = self.logits(generated)  # (n, 10)
        return [inception_score(logits[torch.from_numpy(idx)]) for idx in indices]


def _class_accuracy(model: BaseModel) -> ClassAccuracy:
    require_fashion(model, "class_accuracy")
    return ClassAccuracy(classifier_for_metrics())


def _inception_score(model: BaseModel) -> InceptionScore:
    require_fashion(model, "inception_score")
    return InceptionScore(classifier_for_metrics())
