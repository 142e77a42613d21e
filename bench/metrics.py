"""The core's built-in metric plugin (entry point ``fidelity-metrics = "bench.metrics"``) and
the public import path of the generic metric plumbing (no concrete base model in here).

By job:
  * ``bench.fidelity_metrics``: fidelity against vanilla at the same seed (reference
    "vanilla"), paired image by image: ``psnr_vs_vanilla``, ``ssim_vs_vanilla``,
    ``token_agreement``, ``feature_cosine`` (any base model, in the default set).
  * ``bench.real_features``: real-image features computed once per key and cached.
  * ``bench.distribution_metrics``: FID / KID against real images with any feature
    extractor, the Inception Score, and ``require_dataset`` (``BaseModel.dataset``).
  * ``bench.inception``: the standard Inception-v3 from a *local* weights file.
  * here: ``metric_interval`` (a metric's 95 % interval over the image sample), the opt-in
    ``fid_inception`` for real-image models, and the ``register_metrics`` hook.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from bench import stats
from bench.distribution_metrics import (  # noqa: F401 (public import path)
    FIDMetric,
    KIDMetric,
    inception_score,
    require_dataset,
)
from bench.fidelity_metrics import (  # noqa: F401 (public import path)
    FIDELITY_METRICS,
    PSNR_CAP_DB,
    FeatureCosine,
    PSNRVsVanilla,
    SSIMVsVanilla,
    TokenAgreement,
    feature_cosine,
    feature_cosine_per_image,
    fidelity_metric_specs,
    paired_reference,
    psnr,
    psnr_per_image,
    ssim,
    ssim_per_image,
    token_agreement,
    token_agreement_per_image,
)
from bench.inception import INCEPTION_WEIGHTS_FILE, inception_v3_extractor, load_reference_images
from bench.protocol import GeneratedBatch, MetricInfo
from bench.real_features import (  # noqa: F401 (public import path)
    FrozenExtractor,
    RealFeatures,
    default_cache_dir,
    extract_features,
    file_hash,
    module_device,
)
from bench.specs import MetricContext


def metric_interval(
    metric: Any, generated: GeneratedBatch, ctx: MetricContext, value: float, seed: int = 0
) -> stats.Estimate:
    """95 % interval of ``metric`` over the image sample: the bootstrap of the mean for
    per-image metrics (a ``MetricValue``'s ``per_image``, or the metric's ``per_image``), value +- 1.96 bootstrap SD for set-level ones (``bench.stats``); no
    interval (NaN) for a metric that offers neither or whose resampling fails (warned)."""
    try:
        carried = getattr(value, "per_image", None)  # a MetricValue: the per-image values came with it
        if carried is not None and len(carried) > 0:
            return stats.mean_interval(carried.double().cpu().numpy(), seed=seed)
        if hasattr(metric, "per_image"):
            return stats.mean_interval(metric.per_image(generated, ctx).double().cpu().numpy(), seed=seed)
        if hasattr(metric, "resampled"):
            indices = stats.resample_indices(len(generated.images), stats.SET_RESAMPLES, seed)
            return stats.spread_interval(value, metric.resampled(generated, ctx, indices))
    except Exception as err:  # noqa: BLE001 (an interval is extra information, never a failed metric)
        warnings.warn(f"no interval for {metric.info.name}: {type(err).__name__}: {err}", stacklevel=2)
    return stats.Estimate(value)


# ------------------------------------------------------------------ Inception FID (opt-in)
INCEPTION_WEIGHTS_ENV = "MIGM_INCEPTION_WEIGHTS"  # torch-fidelity's Inception-v3 weights file
FID_REFERENCE_ENV = "MIGM_FID_REFERENCE"  # .npz of real images, uint8 (N, H, W, 3) under "arr_0"
FID_INCEPTION_INFO = MetricInfo("fid_inception", "", False, "data", label="FID (Inception-v3)")


def fid_inception_unavailable() -> str | None:
    """Why ``fid_inception`` cannot run here (its environment variables unset), or None."""
    if not os.environ.get(INCEPTION_WEIGHTS_ENV) or not os.environ.get(FID_REFERENCE_ENV):
        return (
            f"fid_inception needs ${INCEPTION_WEIGHTS_ENV} (a local {INCEPTION_WEIGHTS_FILE}) and "
            f"${FID_REFERENCE_ENV} (an .npz of real images under 'arr_0')"
        )
    return None


def fid_inception_metric(model=None) -> FIDMetric:
    """FID with the standard Inception-v3 (2048-d pool features) for real-image models: the
    weights file from ``$MIGM_INCEPTION_WEIGHTS``, the real images from ``$MIGM_FID_REFERENCE``.
    Not in the default metric set; unavailable (with the reason) when either is unset."""
    from bench.specs import MetricUnavailable

    reason = fid_inception_unavailable()
    if reason:
        raise MetricUnavailable(reason)
    weights, reference = os.environ[INCEPTION_WEIGHTS_ENV], os.environ[FID_REFERENCE_ENV]
    extractor = inception_v3_extractor(weights)
    if not Path(reference).is_file():
        raise FileNotFoundError(f"FID reference images not found: {reference} (${FID_REFERENCE_ENV})")
    key = f"inception-{file_hash(weights)}-{file_hash(reference)}"
    real = RealFeatures(key, lambda: load_reference_images(reference), extractor)
    return FIDMetric(FID_INCEPTION_INFO, extractor, real)
