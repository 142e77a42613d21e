"""Set-level feature statistics, fast: KID over random subsets and FID of image resamples.

Both give the numbers of their references (torchmetrics 1.9 ``image/kid.py`` and
``image/fid.py``) up to float rounding, but reuse work the references repeat:

* KID (``kid_subsets``): torchmetrics draws ``subsets`` pairs of index sets (a real subset,
  then a generated one, each ``torch.randperm(n)[:m]`` from the global generator) and
  evaluates three polynomial kernels per pair. Here the kernel of every generated image with
  every generated image and with every real image is computed once, and each subset only sums
  entries of those matrices; the real-real sums depend on the real features and the index
  draws alone, so a caller may keep them (``cache``) across the configurations of a sweep.
* FID of resamples (``frechet_resampled``): tr((S_r S_g)^(1/2)) is the sum of the square
  roots of the eigenvalues of A S_g A with A = S_r^(1/2) (similar matrices), and A S_g A is
  symmetric, so a symmetric eigensolver replaces the general one and A is computed once for
  all resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """KID's kernel (a b^T / d + 1)^3: (n, d), (m, d) -> (n, m) (degree 3, gamma 1/d, coef 1)."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def _offdiag_sum(k: Tensor, idx: Tensor) -> Tensor:
    """Sum of k[idx][:, idx] off its diagonal (k square, idx (m,) distinct indices)."""
    sub = k[idx][:, idx]  # (m, m)
    return sub.sum() - sub.diagonal().sum()


def kid_subsets(
    real: Tensor,
    fake: Tensor,
    subsets: int,
    subset_size: int,
    seed: int,
    cache: dict[Any, Any] | None = None,
) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 with KID's kernel; real (N, d), fake (n, d).

    Subsets are drawn as torchmetrics ``KernelInceptionDistance.compute`` draws them (real
    indices, then fake indices, per subset, from the global generator seeded with ``seed``
    inside ``fork_rng``, so global random state is untouched); std is the population one
    (``unbiased=False``), as there. ``cache`` keeps each subset's real-real sum, keyed by the
    real features' identity, shapes and draw settings.
    """
    n_real, n_fake, m = len(real), len(fake), subset_size
    if m > min(n_real, n_fake) or m < 2:
        raise ValueError(f"KID subset size {m} must be >= 2 and <= both set sizes ({n_real}, {n_fake})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draws = [(torch.randperm(n_real)[:m], torch.randperm(n_fake)[:m]) for _ in range(subsets)]
    k_ff = poly_kernel(fake, fake)  # (n, n)
    k_rf = poly_kernel(real, fake)  # (N, n)
    key = ("kid-real", id(real), real.data_ptr(), tuple(real.shape), real.dtype, n_fake, m, subsets, seed)
    store = cache if cache is not None else {}
    if key not in store:
        store[key] = (
            real,
            [_offdiag_sum_rows(real, r) for r, _ in draws],
        )  # keep real alive: id stays unique
    real_sums = store[key][1]
    scores = []
    for (r, f), rr in zip(draws, real_sums, strict=True):
        ff = _offdiag_sum(k_ff, f)
        rf = k_rf[r][:, f].sum()
        scores.append((rr + ff) / (m * (m - 1)) - 2 * rf / (m * m))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def _offdiag_sum_rows(x: Tensor, idx: Tensor) -> Tensor:
    """Sum of KID's kernel over pairs of distinct rows of x[idx]."""
    k = poly_kernel(x[idx], x[idx])  # (m, m)
    return k.sum() - k.diagonal().sum()


def _sqrt_psd(s: Tensor) -> Tensor:
    """Symmetric square root of a covariance matrix (eigenvalues clamped at 0)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_resampled(fake: Tensor, real: Tensor, indices: Sequence[np.ndarray] | np.ndarray) -> list[float]:
    """FID of each resample fake[idx] against real: fake (n, d), real (N, d), indices (R, n).

    ||mu_g - mu_r||^2 + tr(S_g) + tr(S_r) - 2 sum sqrt(eig(A S_g A)), A = S_r^(1/2); equal to
    ``||.||^2 + tr + tr - 2 tr((S_g S_r)^(1/2))`` (Heusel et al. 2017) as torchmetrics
    ``_compute_fid`` evaluates it with a general eigensolver.
    """
    fake, real = fake.double(), real.double()
    mu_r, cov_r = real.mean(0), torch.cov(real.T)
    root_r = _sqrt_psd(cov_r)  # (d, d), shared by every resample
    out = []
    for idx in indices:
        f = fake[torch.as_tensor(np.asarray(idx))]
        mu_g, cov_g = f.mean(0), torch.cov(f.T)
        inner = root_r @ cov_g @ root_r
        root_trace = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
        diff = mu_g - mu_r
        out.append(float(diff @ diff + cov_g.trace() + cov_r.trace() - 2 * root_trace))
    return out
