"""Fidelity against vanilla at the same seed (reference "vanilla"), paired image by image:

  * ``psnr_vs_vanilla``: mean per-image PSNR in dB (data range 1), capped at PSNR_CAP_DB
    for identical images (torchmetrics ``peak_signal_noise_ratio``).
  * ``ssim_vs_vanilla``: mean SSIM (Wang et al. 2004; torchmetrics
    ``structural_similarity_index_measure``, Gaussian window 11 / sigma 1.5, shrunk to fit
    small images).
  * ``token_agreement``: fraction of final image tokens equal to vanilla's.
  * ``feature_cosine``: mean cosine similarity of the final-step last-layer features,
    per token (the quantity MIGM-Shortcut's shortcut is trained to preserve).

Any base model: no dataset needed. Registered by the core's built-in plugin ``bench.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bench.batch_memo import BatchMemo
from bench.protocol import GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricSpec

PSNR_CAP_DB = 100.0  # PSNR of identical images (MSE 0) is reported as this, not inf

# ------------------------------------------------------------------ pairing with vanilla


def paired_reference(generated: GeneratedBatch, ctx: MetricContext) -> GeneratedBatch:
    """Vanilla's batch for the same seeds (``generated`` itself while vanilla is being
    computed). Raises ValueError when the two cannot be paired by index."""
    ref = ctx.vanilla if ctx.vanilla is not None else generated
    if ref.images.shape != generated.images.shape:
        raise ValueError(
            f"cannot pair with vanilla: images {tuple(generated.images.shape)} vs vanilla {tuple(ref.images.shape)}"
            " (same number of images, seeds and resolution needed)"
        )
    if not torch.equal(ref.cond.cpu(), generated.cond.cpu()):
        raise ValueError(
            "cannot pair with vanilla: conditions differ (vanilla must use the same seeds and conditions)"
        )
    return ref


# ------------------------------------------------------------------ fidelity functions


def psnr_per_image(images: Tensor, reference: Tensor, cap_db: float = PSNR_CAP_DB) -> Tensor:
    """Per-image PSNR (dB, data range 1): (n, C, H, W) x2 -> (n,), capped at ``cap_db``."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    per_image = peak_signal_noise_ratio(
        images.double(), reference.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )  # (n,), inf where identical
    return per_image.clamp(max=cap_db)


def psnr(images: Tensor, reference: Tensor, cap_db: float = PSNR_CAP_DB) -> float:
    """Mean over images of the per-image PSNR (dB, data range 1): (n, C, H, W) x2 -> float.
    Identical images give ``cap_db`` instead of inf so means and plots stay finite."""
    return float(psnr_per_image(images, reference, cap_db).mean())


def ssim_per_image(images: Tensor, reference: Tensor) -> Tensor:
    """Per-image SSIM, (n, C, H, W) in [0, 1] x2 -> (n,) in [-1, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(images.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)  # odd, fits the image (11 for >= 11 px)
    if kernel < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {tuple(images.shape[-2:])}")
    sigma = 1.5 * kernel / 11
    return structural_similarity_index_measure(
        images.double(), reference.double(), data_range=1.0, kernel_size=kernel, sigma=sigma, reduction="none"
    )


def ssim(images: Tensor, reference: Tensor) -> float:
    """Mean SSIM over images, (n, C, H, W) in [0, 1] x2 -> float in [-1, 1]."""
    return float(ssim_per_image(images, reference).mean())


def token_agreement_per_image(tokens: Tensor, reference: Tensor) -> Tensor:
    """Per-image fraction of positions where the token ids agree: (n, P) x2 -> (n,)."""
    if tokens.shape != reference.shape:
        raise ValueError(f"token shapes differ: {tuple(tokens.shape)} vs {tuple(reference.shape)}")
    return (tokens == reference).double().mean(1)


def token_agreement(tokens: Tensor, reference: Tensor) -> float:
    """Fraction of positions where the token ids agree: (n, P) x2 -> float in [0, 1]."""
    return float(token_agreement_per_image(tokens, reference).mean())


def feature_cosine_per_image(features: Tensor, reference: Tensor) -> Tensor:
    """Per-image mean cosine similarity over positions: (n, L, D) x2 -> (n,)."""
    if features.shape != reference.shape:
        raise ValueError(f"feature shapes differ: {tuple(features.shape)} vs {tuple(reference.shape)}")
    return torch.nn.functional.cosine_similarity(features.double(), reference.double(), dim=-1).mean(1)


def feature_cosine(features: Tensor, reference: Tensor) -> float:
    """Mean cosine similarity over images and positions: (n, L, D) x2 -> float in [-1, 1]."""
    return float(feature_cosine_per_image(features, reference).mean())


# ------------------------------------------------------------------ fidelity metrics


class _VanillaFidelity:
    """Shared compute(): pair with vanilla, then apply ``self._score`` to the two batches."""

    info: MetricInfo

    def __init__(self, model=None) -> None:  # metric factories receive the base model; unused here
        self._memo = BatchMemo()  # compute() and the interval score the same pair once

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        return float(self.per_image(generated, ctx).mean())

    def per_image(self, generated: GeneratedBatch, ctx: MetricContext) -> Tensor:
        """(n,) per-image values; the metric is their mean (bootstrapped over images)."""
        return self._memo.get(
            (generated, ctx.vanilla), lambda: self._score(generated, paired_reference(generated, ctx))
        )

    def _score(self, generated: GeneratedBatch, ref: GeneratedBatch) -> Tensor:
        raise NotImplementedError


def _feature_cosine_score(generated: GeneratedBatch, ref: GeneratedBatch) -> Tensor:
    if generated.features is None or ref.features is None:
        raise ValueError(
            "feature_cosine needs the final-step features of both batches "
            "(sample with record_features=True and store them in GeneratedBatch.features)"
        )
    return feature_cosine_per_image(generated.features, ref.features)


def _fidelity_metric(
    class_name: str, info: MetricInfo, score: Callable[..., Tensor]
) -> type[_VanillaFidelity]:
    """A ``_VanillaFidelity`` subclass scoring (generated, vanilla's batch) -> (n,) with ``score``."""
    return type(
        class_name, (_VanillaFidelity,), {"info": info, "_score": staticmethod(score), "__module__": __name__}
    )


_INFO = {  # class name -> what it measures, and its score (generated, vanilla's batch) -> (n,)
    "PSNRVsVanilla": MetricInfo("psnr_vs_vanilla", "dB", True, "vanilla", label="PSNR vs vanilla"),
    "SSIMVsVanilla": MetricInfo("ssim_vs_vanilla", "", True, "vanilla", label="SSIM vs vanilla"),
    "TokenAgreement": MetricInfo("token_agreement", "fraction", True, "vanilla", label="token agreement"),
    "FeatureCosine": MetricInfo("feature_cosine", "", True, "vanilla", label="feature cosine"),
}
_SCORE = {
    "PSNRVsVanilla": lambda generated, ref: psnr_per_image(generated.images, ref.images),
    "SSIMVsVanilla": lambda generated, ref: ssim_per_image(generated.images, ref.images),
    "TokenAgreement": lambda generated, ref: token_agreement_per_image(generated.tokens, ref.tokens),
    "FeatureCosine": _feature_cosine_score,
}
PSNRVsVanilla, SSIMVsVanilla, TokenAgreement, FeatureCosine = (
    _fidelity_metric(name, _INFO[name], _SCORE[name]) for name in _INFO
)

FIDELITY_METRICS = (PSNRVsVanilla, SSIMVsVanilla, TokenAgreement, FeatureCosine)


def fidelity_metric_specs() -> list[MetricSpec]:
    """MetricSpecs of the four vanilla-fidelity metrics (any base model)."""
    return [MetricSpec(info=cls.info, factory=cls) for cls in FIDELITY_METRICS]
