"""bench.feature_stats gives the references' numbers (torchmetrics KID and FID) on features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import KernelInceptionDistance

from bench.feature_stats import frechet_resampled, kid_subsets

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics KID buffer notices


class _Identity(torch.nn.Module):
    num_features = 8

    def forward(self, x):
        return x


def _torchmetrics_kid(real: torch.Tensor, fake: torch.Tensor, subsets: int, size: int, seed: int) -> tuple:
    kid = KernelInceptionDistance(feature=_Identity(), subsets=subsets, subset_size=size)
    kid.real_features, kid.fake_features = [real], [fake]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


@pytest.mark.parametrize(("n_real", "n_fake", "size"), [(60, 20, 20), (60, 30, 12)])
def test_kid_subsets_equals_torchmetrics(n_real, n_fake, size):
    g = torch.Generator().manual_seed(1)
    real = torch.randn(n_real, 8, generator=g, dtype=torch.float64)
    fake = torch.randn(n_fake, 8, generator=g, dtype=torch.float64) * 1.3 + 0.2
    expected = _torchmetrics_kid(real, fake, subsets=7, size=size, seed=3)
    assert kid_subsets(real, fake, subsets=7, subset_size=size, seed=3) == pytest.approx(expected, rel=1e-9)


def test_kid_cache_reuses_real_sums_and_keeps_global_rng():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(40, 8, generator=g, dtype=torch.float64)
    fakes = [torch.randn(16, 8, generator=g, dtype=torch.float64) + s for s in (0.0, 0.5)]
    cache: dict = {}
    state = torch.get_rng_state()
    got = [kid_subsets(real, f, 5, 16, seed=0, cache=cache) for f in fakes]
    assert torch.equal(state, torch.get_rng_state())
    assert len(cache) == 1  # one entry of real-real sums serves both generated sets
    assert got == [pytest.approx(_torchmetrics_kid(real, f, 5, 16, 0), rel=1e-9) for f in fakes]
    assert got[0][0] < got[1][0]  # the shifted set is farther from the real one


def test_kid_subset_size_checked():
    with pytest.raises(ValueError, match="subset size"):
        kid_subsets(torch.randn(10, 4), torch.randn(5, 4), subsets=2, subset_size=6, seed=0)


def test_frechet_resampled_equals_general_eigensolver_formula():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    fake = torch.randn(50, 6, generator=g, dtype=torch.float64) * 0.8 + 0.3
    indices = np.random.default_rng(0).integers(0, 50, size=(4, 50))
    expected = []
    for idx in indices:  # torchmetrics' rule on each resample
        f = fake[torch.from_numpy(idx)]
        expected.append(float(_compute_fid(f.mean(0), torch.cov(f.T), real.mean(0), torch.cov(real.T))))
    assert frechet_resampled(fake, real, indices) == pytest.approx(expected, rel=1e-8)
