"""Distribution metrics against real images (reference "data"), with any feature extractor:

* ``FIDMetric``: torchmetrics ``FrechetInceptionDistance(feature=module)`` (Heusel et al.
  2017); ``KIDMetric``: torchmetrics ``KernelInceptionDistance`` (Binkowski et al. 2018).
  The real images' features come from a ``bench.real_features.RealFeatures``.
* ``inception_score`` (Salimans et al. 2016) from any classifier's logits.
* ``require_dataset``: the refusal of a metric whose real data or feature network only fit
  base models trained on one dataset (``BaseModel.dataset``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from bench.batch_memo import BatchMemo
from bench.feature_stats import frechet_resampled, kid_subsets, poly_kernel
from bench.protocol import BaseModel, GeneratedBatch, MetricInfo
from bench.real_features import FrozenExtractor, RealFeatures, extract_features, module_device
from bench.specs import MetricContext, MetricUnavailable


def require_dataset(model: BaseModel, dataset: str, metric: str, needs: str = "") -> None:
    """MetricUnavailable, in one line, unless ``model`` declares it was trained on ``dataset``
    (``BaseModel.dataset``). ``needs`` says what the metric needs in words (default: a model
    trained on ``dataset``)."""
    if model.dataset != dataset:
        raise MetricUnavailable(
            f"{metric} needs {needs or f'a base model trained on {dataset}'}; base model "
            f"{model.name!r} has dataset={model.dataset!r}"
        )


def _check_images(images: Tensor, name: str) -> Tensor:
    if images.dim() != 4:
        raise ValueError(f"{name}: expected images (n, C, H, W), got shape {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError(f"{name}: needs at least 2 generated images, got {len(images)}")
    return images.detach().float()


class FIDMetric:
    """Fréchet distance between Gaussian fits of real and generated features
    (torchmetrics ``FrechetInceptionDistance`` with a custom ``feature`` module, float
    input, i.e. ``normalize=True``). The real statistics are injected from ``real``'s
    cached features instead of re-running the extractor on the real set every call."""

    min_images = 2  # checked before a sweep samples anything

    def __init__(
        self, info: MetricInfo, extractor: nn.Module, real: RealFeatures, batch_size: int = 500
    ) -> None:
        self.info = info
        self.real = real
        self.extractor = extractor
        self.batch_size = batch_size
        self._features = BatchMemo()

    def features(self, generated: GeneratedBatch) -> Tensor:
        """(n, d) float64 features of the generated images (extracted once per batch)."""
        return self._features.get((generated,), lambda: _features_of(self, generated))

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        """torchmetrics' FID from its running sums: the real side's from the cached features,
        the generated side's from ``features`` (extracted once per batch; the interval reuses
        them), added in torchmetrics' ``update`` batches so the sums are the ones it forms."""
        from torchmetrics.image.fid import FrechetInceptionDistance

        device = module_device(self.extractor)
        real = self.real.get(ctx).double().to(device)  # (n_real, d)
        fake = self.features(generated).to(device)  # (n, d) float64
        fid = FrechetInceptionDistance(
            feature=FrozenExtractor(self.extractor, real.shape[1]), reset_real_features=False, normalize=True
        ).to(device)
        fid.real_features_sum = real.sum(0)
        fid.real_features_cov_sum = real.T @ real
        fid.real_features_num_samples = torch.tensor(len(real), dtype=torch.long)
        for chunk in fake.split(self.batch_size):  # (b, d): what update() adds per batch
            fid.fake_features_sum += chunk.sum(0)
            fid.fake_features_cov_sum += chunk.T @ chunk
            fid.fake_features_num_samples += len(chunk)
        fid.orig_dtype = torch.float32  # update() records the extractor's dtype; ours give float32
        return float(fid.compute())

    def resampled(self, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray) -> list[float]:
        """FID of each image resample, indices (R, n) (``metric_interval``)."""
        return _fid_resampled(self, generated, ctx, indices)


def _features_of(metric: FIDMetric | KIDMetric, generated: GeneratedBatch) -> Tensor:
    images = _check_images(generated.images, metric.info.name)
    return extract_features(metric.extractor, images, metric.batch_size).double()  # (n, d)


def _fid_resampled(
    metric: FIDMetric, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray
) -> list[float]:
    """FID of each resample (``bench.feature_stats.frechet_resampled``: S_r^(1/2) once, a
    symmetric eigensolver per resample)."""
    return frechet_resampled(metric.features(generated), metric.real.get(ctx), indices)


class KIDMetric:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 averaged over random
    subsets (torchmetrics ``KernelInceptionDistance``; degree 3, gamma 1/d, coef 1).
    Subsets are drawn under a fixed seed inside ``torch.random.fork_rng`` so results are
    reproducible and global random state is untouched. Reported: the subset mean."""

    min_images = 2  # checked before a sweep samples anything

    def __init__(
        self,
        info: MetricInfo,
        extractor: nn.Module,
        real: RealFeatures,
        subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0,
        batch_size: int = 500,
    ) -> None:
        self.info = info
        self.real = real
        self.extractor = extractor
        self.subsets = subsets
        self.subset_size = subset_size
        self.seed = seed
        self.batch_size = batch_size
        self._features = BatchMemo()
        self._real64: tuple[Tensor, Tensor] | None = None  # (real features, their float64 copy)
        self._kid_cache: dict = {}  # real-real kernel sums per subset (bench.feature_stats)

    def features(self, generated: GeneratedBatch) -> Tensor:
        """(n, d) float64 features of the generated images (extracted once per batch)."""
        return self._features.get((generated,), lambda: _features_of(self, generated))

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        """torchmetrics' subsets and rule (``bench.feature_stats.kid_subsets``) in float64; the
        real-real kernel sums of each subset are kept for the next configuration."""
        real = self.real.get(ctx)
        if self._real64 is None or self._real64[0] is not real:
            self._real64 = (real, real.double())
        fake = self.features(generated)
        size = min(self.subset_size, len(real), len(fake))
        mean, _std = kid_subsets(self._real64[1], fake, self.subsets, size, self.seed, cache=self._kid_cache)
        return mean

    def resampled(self, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray) -> list[float]:
        """KID of each image resample, indices (R, n) (``metric_interval``)."""
        return _kid_resampled(self, generated, ctx, indices)


def _kid_resampled(
    metric: KIDMetric, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray
) -> list[float]:
    """Unbiased MMD^2 (polynomial kernel, as ``KIDMetric``) of each image resample against one
    fixed random subset of the real features; from the kernel matrices, computed once."""
    f = metric.features(generated)  # (n, d)
    real = metric.real.get(ctx).double()
    s = min(metric.subset_size, len(real), len(f))
    r = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(metric.seed))[:s]]  # (s, d)

    k_ff, k_fr, k_rr = poly_kernel(f, f), poly_kernel(f, r), poly_kernel(r, r)  # (n, n), (n, s), (s, s)
    n = len(f)
    counts = torch.from_numpy(np.stack([np.bincount(i, minlength=n) for i in indices])).double()  # (R, n)
    # resample X = f[idx]: sum over pairs a != b of k(X_a, X_b) = c^T K c - c . diag(K)
    xx = ((counts @ k_ff) * counts).sum(1) - counts @ k_ff.diagonal()
    yy = (k_rr.sum() - k_rr.trace()) / (s * (s - 1))
    xy = counts @ k_fr.sum(1) / (n * s)
    return (xx / (n * (n - 1)) + yy - 2 * xy).tolist()


def inception_score(logits: Tensor) -> float:
    """Inception Score (Salimans et al. 2016), one split: exp(E_x KL(p(y|x) || p(y))),
    p(y) the mean prediction over the set. (n, K) logits -> float in [1, K]."""
    if logits.dim() != 2 or len(logits) < 1:
        raise ValueError(f"inception_score expects (n, K) logits, got shape {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.double(), dim=1)  # (n, K) log p(y|x)
    log_marginal = torch.logsumexp(log_p, dim=0) - math.log(len(logits))  # (K,) log p(y)
    kl = (log_p.exp() * (log_p - log_marginal)).sum(1)  # (n,)
    return float(kl.mean().exp())
