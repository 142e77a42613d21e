"""Generic metric plumbing (no concrete base model in here).

Fidelity against vanilla at the same seed (reference "vanilla"), paired image by image:
  * ``psnr_vs_vanilla``: mean per-image PSNR in dB (data range 1), capped at PSNR_CAP_DB
    for identical images (torchmetrics ``peak_signal_noise_ratio``).
  * ``ssim_vs_vanilla``: mean SSIM (Wang et al. 2004; torchmetrics
    ``structural_similarity_index_measure``, Gaussian window 11 / sigma 1.5, shrunk to fit
    small images).
  * ``token_agreement``: fraction of final image tokens equal to vanilla's.
  * ``feature_cosine``: mean cosine similarity of the final-step last-layer features,
    per token (the quantity MIGM-Shortcut's shortcut is trained to preserve).

Distribution metrics against real images (reference "data"), with any feature extractor:
  * ``FIDMetric``: torchmetrics ``FrechetInceptionDistance(feature=module)`` (Heusel et al.
    2017); ``KIDMetric``: torchmetrics ``KernelInceptionDistance`` (Binkowski et al. 2018).
    Real-image features are computed once, kept in ``MetricContext.cache`` and on disk
    (``$MIGM_BENCH_CACHE`` or ~/.cache/migm-bench) under a caller-given key that must
    change when the extractor or the data change (e.g. contain the weights' hash).
  * ``inception_v3_extractor(weights_path)``: the standard Inception-v3 (torch-fidelity port
    of the TF 2015-12-05 graph) from a *local* weights file, for ImageNet-scale models
    (nothing is downloaded at run time).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench import stats
from bench.protocol import GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricSpec

PSNR_CAP_DB = 100.0  # PSNR of identical images (MSE 0) is reported as this, not inf
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity v0.2.0 release asset

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
        pass

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        return float(self.per_image(generated, ctx).mean())

    def per_image(self, generated: GeneratedBatch, ctx: MetricContext) -> Tensor:
        """(n,) per-image values; the metric is their mean (bootstrapped over images)."""
        return self._score(generated, paired_reference(generated, ctx))

    def _score(self, generated: GeneratedBatch, ref: GeneratedBatch) -> Tensor:
        raise NotImplementedError


class PSNRVsVanilla(_VanillaFidelity):
    info = MetricInfo("psnr_vs_vanilla", "dB", True, "vanilla")

    def _score(self, generated, ref):
        return psnr_per_image(generated.images, ref.images)


class SSIMVsVanilla(_VanillaFidelity):
    info = MetricInfo("ssim_vs_vanilla", "", True, "vanilla")

    def _score(self, generated, ref):
        return ssim_per_image(generated.images, ref.images)


class TokenAgreement(_VanillaFidelity):
    info = MetricInfo("token_agreement", "fraction", True, "vanilla")

    def _score(self, generated, ref):
        return token_agreement_per_image(generated.tokens, ref.tokens)


class FeatureCosine(_VanillaFidelity):
    info = MetricInfo("feature_cosine", "", True, "vanilla")

    def _score(self, generated, ref):
        if generated.features is None or ref.features is None:
            raise ValueError(
                "feature_cosine needs the final-step features of both batches "
                "(sample with record_features=True and store them in GeneratedBatch.features)"
            )
        return feature_cosine_per_image(generated.features, ref.features)


FIDELITY_METRICS = (PSNRVsVanilla, SSIMVsVanilla, TokenAgreement, FeatureCosine)


def fidelity_metric_specs() -> list[MetricSpec]:
    """MetricSpecs of the four vanilla-fidelity metrics (any base model)."""
    return [MetricSpec(info=cls.info, factory=cls) for cls in FIDELITY_METRICS]


# ------------------------------------------------------------------ real-data features


def default_cache_dir() -> Path:
    """$MIGM_BENCH_CACHE, else ~/.cache/migm-bench."""
    return Path(os.environ.get("MIGM_BENCH_CACHE") or Path.home() / ".cache" / "migm-bench")


class FrozenExtractor(nn.Module):
    """Wraps a feature module for torchmetrics: eval mode forever, no autograd,
    ``num_features`` set (so torchmetrics skips its dummy forward)."""

    def __init__(self, module: nn.Module, num_features: int) -> None:
        super().__init__()
        self.module = module
        self.num_features = int(num_features)

    def train(self, mode: bool = True) -> FrozenExtractor:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        if out.dim() != 2:
            raise ValueError(f"feature extractor must return (n, d) features, got shape {tuple(out.shape)}")
        return out


def module_device(module: nn.Module) -> torch.device:
    """Where the module's parameters live (CPU for a parameter-free module)."""
    return next(iter(module.parameters()), torch.empty(0)).device


@torch.no_grad()
def extract_features(module: nn.Module, images: Tensor, batch_size: int = 500) -> Tensor:
    """(n, C, H, W) -> (n, d) float32 features on CPU, ``batch_size`` images at a time."""
    module.eval()
    device = module_device(module)
    chunks = [
        module(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def file_hash(path: str | os.PathLike) -> str:
    """sha256 (first 16 hex digits) of a file's bytes: keys caches of real-data features."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_key(key: str) -> str:
    if not key or any(c in key for c in "/\\") or key.startswith("."):
        raise ValueError(f"cache key {key!r} must be a non-empty file-name-safe string")
    return key


class RealFeatures:
    """Features of a fixed real image set, computed once per key.

    Lookup order: ``ctx.cache["real_features/<key>"]``, then ``<cache_dir>/real_features/<key>.safetensors``,
    then extraction from ``images()`` (a callable, so the data is only loaded when needed).
    ``key`` must identify both the extractor (e.g. its weights hash) and the data.
    """

    def __init__(
        self,
        key: str,
        images: Callable[[], Tensor] | Tensor,
        extractor: nn.Module,
        cache_dir: Path | None | bool = None,
        batch_size: int = 500,
    ) -> None:
        self.key = _check_key(key)
        self._images = images
        self.extractor = extractor
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir else default_cache_dir()
        self.batch_size = batch_size
        self._example: Tensor | None = None  # one real image, for shape checks

    @property
    def disk_path(self) -> Path | None:
        return (
            None if self.cache_dir is None else self.cache_dir / "real_features" / f"{self.key}.safetensors"
        )

    def images(self) -> Tensor:
        return self._images() if callable(self._images) else self._images

    def get(self, ctx: MetricContext | None = None) -> Tensor:
        """(n_real, d) float32 features."""
        mem_key = f"real_features/{self.key}"
        if ctx is not None and mem_key in ctx.cache:
            return ctx.cache[mem_key]
        feats = self._load_disk()
        if feats is None:
            feats = extract_features(self.extractor, self.images(), self.batch_size)
            self._save_disk(feats)
        if ctx is not None:
            ctx.cache[mem_key] = feats
        return feats

    def _load_disk(self) -> Tensor | None:
        path = self.disk_path
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            feats = load_file(str(path))["features"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:  # a corrupt cache is rebuilt, not fatal
            warnings.warn(f"ignoring unreadable real-feature cache {path}: {e}")
            return None
        if feats.dim() != 2 or len(feats) < 2:
            warnings.warn(f"ignoring real-feature cache {path} with shape {tuple(feats.shape)}")
            return None
        return feats

    def _save_disk(self, feats: Tensor) -> None:
        path = self.disk_path
        if path is None:
            return
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        save_file({"features": feats.contiguous()}, str(tmp), metadata={"key": self.key})
        os.replace(tmp, path)


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

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        from torchmetrics.image.fid import FrechetInceptionDistance

        device = module_device(self.extractor)
        images = _check_images(generated.images, self.info.name).to(device)
        real = self.real.get(ctx).double().to(device)  # (n_real, d)
        fid = FrechetInceptionDistance(
            feature=FrozenExtractor(self.extractor, real.shape[1]), reset_real_features=False, normalize=True
        ).to(device)
        fid.real_features_sum = real.sum(0)
        fid.real_features_cov_sum = real.T @ real
        fid.real_features_num_samples = torch.tensor(len(real), dtype=torch.long)
        for i in range(0, len(images), self.batch_size):
            fid.update(images[i : i + self.batch_size], real=False)
        return float(fid.compute())

    def resampled(self, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray) -> list[float]:
        """FID of each image resample, indices (R, n) (``metric_interval``)."""
        return _fid_resampled(self, generated, ctx, indices)


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) (Heusel et al. 2017); the trace
    of the square root is the sum of the square roots of the eigenvalues of S1 S2 (real and
    non-negative for covariance matrices, up to rounding)."""
    diff = mu1 - mu2
    root_trace = torch.linalg.eigvals(cov1 @ cov2).real.clamp_min(0).sqrt().sum()
    return float(diff @ diff + cov1.trace() + cov2.trace() - 2 * root_trace)


def _fid_resampled(
    metric: FIDMetric, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray
) -> list[float]:
    feats = extract_features(
        metric.extractor, _check_images(generated.images, metric.info.name)
    ).double()  # (n, d)
    real = metric.real.get(ctx).double()  # (n_real, d)
    mu_r, cov_r = real.mean(0), torch.cov(real.T)
    out = []
    for idx in indices:  # (n,) image indices, with replacement
        f = feats[torch.from_numpy(idx)]
        out.append(frechet_distance(f.mean(0), torch.cov(f.T), mu_r, cov_r))
    return out


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

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> float:
        from torchmetrics.image.kid import KernelInceptionDistance

        device = module_device(self.extractor)
        images = _check_images(generated.images, self.info.name).to(device)
        real = self.real.get(ctx).to(device)
        size = min(self.subset_size, len(real), len(images))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "will save all extracted features in buffer"
            kid = KernelInceptionDistance(
                feature=FrozenExtractor(self.extractor, real.shape[1]),
                subsets=self.subsets,
                subset_size=size,
                reset_real_features=False,
                normalize=True,
            ).to(device)
        kid.real_features = [real]
        for i in range(0, len(images), self.batch_size):
            kid.update(images[i : i + self.batch_size], real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mean, _std = kid.compute()
        return float(mean)

    def resampled(self, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray) -> list[float]:
        """KID of each image resample, indices (R, n) (``metric_interval``)."""
        return _kid_resampled(self, generated, ctx, indices)


def _kid_resampled(
    metric: KIDMetric, generated: GeneratedBatch, ctx: MetricContext, indices: np.ndarray
) -> list[float]:
    """Unbiased MMD^2 (polynomial kernel, as ``KIDMetric``) of each image resample against one
    fixed random subset of the real features; from the kernel matrices, computed once."""
    f = extract_features(
        metric.extractor, _check_images(generated.images, metric.info.name)
    ).double()  # (n, d)
    real = metric.real.get(ctx).double()
    s = min(metric.subset_size, len(real), len(f))
    r = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(metric.seed))[:s]]  # (s, d)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T / a.shape[1] + 1) ** 3

    k_ff, k_fr, k_rr = kernel(f, f), kernel(f, r), kernel(r, r)  # (n, n), (n, s), (s, s)
    n = len(f)
    counts = torch.from_numpy(np.stack([np.bincount(i, minlength=n) for i in indices])).double()  # (R, n)
    # resample X = f[idx]: sum over pairs a != b of k(X_a, X_b) = c^T K c - c . diag(K)
    xx = ((counts @ k_ff) * counts).sum(1) - counts @ k_ff.diagonal()
    yy = (k_rr.sum() - k_rr.trace()) / (s * (s - 1))
    xy = counts @ k_fr.sum(1) / (n * s)
    return (xx / (n * (n - 1)) + yy - 2 * xy).tolist()


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


# ------------------------------------------------------------------ Inception-v3 (ImageNet users)


class _InceptionFromUnitFloat(nn.Module):
    """float (n, C, H, W) in [0, 1] -> uint8 [0, 255] RGB -> Inception-v3 features (n, d)."""

    def __init__(self, inception: nn.Module, feature: int) -> None:
        super().__init__()
        self.inception = inception
        self.num_features = feature

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB
        if x.is_floating_point():
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.inception(x).reshape(len(x), -1)


def inception_v3_extractor(weights_path: str | os.PathLike | None, feature: int = 2048) -> nn.Module:
    """Inception-v3 feature extractor (torchmetrics ``NoTrainInceptionV3``, the torch-fidelity
    port of the TF graph used by the original FID code) built from a LOCAL weights file
    (``weights-inception-2015-12-05-6726825d.pth`` of torch-fidelity's v0.2.0 release).

    Takes float images in [0, 1] (grayscale is repeated to RGB); returns (n, feature).
    Raises FileNotFoundError naming the path when the weights are missing, and
    ModuleNotFoundError when torch-fidelity is not installed.
    """
    if feature not in (64, 192, 768, 2048):
        raise ValueError(f"Inception feature layer must be one of 64, 192, 768, 2048, got {feature}")
    if weights_path is None:
        raise FileNotFoundError(
            f"no Inception-v3 weights path given: download {INCEPTION_WEIGHTS_FILE} "
            "(torch-fidelity v0.2.0 release) on a machine with internet and pass its local path"
        )
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception-v3 weights not found: {path} (expected torch-fidelity's {INCEPTION_WEIGHTS_FILE}; "
            "nothing is downloaded at run time)"
        )
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError(
            "Inception-v3 FID/KID needs torch-fidelity: `pip install torch-fidelity`"
        ) from e
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat", features_list=[str(feature)], feature_extractor_weights_path=str(path)
        )
    except Exception as e:
        raise RuntimeError(f"could not load Inception-v3 weights from {path}: {e}") from e
    return _InceptionFromUnitFloat(net, feature)


def inception_score(logits: Tensor) -> float:
    """Inception Score (Salimans et al. 2016), one split: exp(E_x KL(p(y|x) || p(y))),
    p(y) the mean prediction over the set. (n, K) logits -> float in [1, K]."""
    if logits.dim() != 2 or len(logits) < 1:
        raise ValueError(f"inception_score expects (n, K) logits, got shape {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.double(), dim=1)  # (n, K) log p(y|x)
    log_marginal = torch.logsumexp(log_p, dim=0) - math.log(len(logits))  # (K,) log p(y)
    kl = (log_p.exp() * (log_p - log_marginal)).sum(1)  # (n,)
    return float(kl.mean().exp())


# ------------------------------------------------------------------ Inception FID (opt-in)
INCEPTION_WEIGHTS_ENV = "MIGM_INCEPTION_WEIGHTS"  # torch-fidelity's Inception-v3 weights file
FID_REFERENCE_ENV = "MIGM_FID_REFERENCE"  # .npz of real images, uint8 (N, H, W, 3) under "arr_0"
FID_INCEPTION_INFO = MetricInfo("fid_inception", "", False, "data", label="FID (Inception-v3)")


def load_reference_images(path: str | os.PathLike) -> Tensor:
    """Real images of an FID reference batch (the ``arr_0`` layout of ADM/guided-diffusion's
    ``VIRTUAL_imagenet256_labeled.npz``): uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1]."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID reference images not found: {path}")
    with np.load(path) as data:
        if "arr_0" not in data:
            raise ValueError(f"{path}: no 'arr_0' array of images (keys: {', '.join(data.files)})")
        arr = data["arr_0"]
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise ValueError(f"{path}: 'arr_0' must be uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)


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

