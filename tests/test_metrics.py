"""bench.metrics (fidelity, FID/KID plumbing, IS) and the Fashion metric plugin."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from bench.metrics import (
    PSNR_CAP_DB,
    FeatureCosine,
    FIDMetric,
    KIDMetric,
    PSNRVsVanilla,
    RealFeatures,
    SSIMVsVanilla,
    TokenAgreement,
    feature_cosine,
    inception_score,
    inception_v3_extractor,
    psnr,
    ssim,
    token_agreement,
)
from bench.protocol import GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricUnavailable


def batch(images, tokens=None, cond=None, features=None) -> GeneratedBatch:
    n = len(images)
    tokens = torch.zeros(n, 4, dtype=torch.long) if tokens is None else tokens
    cond = torch.arange(n) % 10 if cond is None else cond
    return GeneratedBatch(images=images, tokens=tokens, cond=cond, features=features)


def ctx(vanilla=None) -> MetricContext:
    return MetricContext(model=None, device=torch.device("cpu"), vanilla=vanilla)


# ------------------------------------------------------------------ fidelity


def test_identical_batches_are_perfect():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=g)
    tokens = torch.randint(0, 16, (4, 9), generator=g)
    feats = torch.randn(4, 10, 8, generator=g)
    assert psnr(images, images) == PSNR_CAP_DB
    assert ssim(images, images) == pytest.approx(1.0, abs=1e-9)
    assert token_agreement(tokens, tokens) == 1.0
    assert feature_cosine(feats, feats) == pytest.approx(1.0, abs=1e-9)
    b = batch(images, tokens, features=feats)
    for metric in (PSNRVsVanilla(), SSIMVsVanilla(), TokenAgreement(), FeatureCosine()):
        assert metric.compute(b, ctx()) == pytest.approx(
            1.0 if metric.info.name != "psnr_vs_vanilla" else PSNR_CAP_DB
        )
        assert metric.info.reference == "vanilla" and metric.info.higher_is_better


def test_known_differences():
    a = torch.zeros(2, 1, 8, 8)
    assert psnr(a + 0.1, a) == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    assert psnr(torch.cat([a[:1], a[1:] + 0.1]), a) == pytest.approx(
        (PSNR_CAP_DB + 20.0) / 2
    )  # per-image mean
    assert ssim(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)), a + 0.5) < 0.1
    t = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert token_agreement(t, torch.tensor([[1, 2, 0, 0], [5, 0, 0, 0]])) == pytest.approx(3 / 8)
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    f = torch.stack([e0, e0])[None]  # (1, 2, 2)
    assert feature_cosine(f, torch.stack([e1, -e0])[None]) == pytest.approx(-0.5)  # cos 0 and -1


def test_fidelity_metric_pairs_with_vanilla_by_index():
    van = batch(torch.zeros(3, 1, 8, 8), tokens=torch.tensor([[1, 1], [2, 2], [3, 3]]))
    gen = batch(torch.zeros(3, 1, 8, 8) + 0.1, tokens=torch.tensor([[1, 1], [2, 0], [3, 3]]))
    assert PSNRVsVanilla().compute(gen, ctx(van)) == pytest.approx(20.0)
    assert TokenAgreement().compute(gen, ctx(van)) == pytest.approx(5 / 6)
    shuffled = batch(van.images, van.tokens, cond=torch.tensor([2, 1, 0]))
    with pytest.raises(ValueError, match="conditions differ"):
        TokenAgreement().compute(gen, ctx(shuffled))
    with pytest.raises(ValueError, match="cannot pair"):
        PSNRVsVanilla().compute(batch(torch.zeros(2, 1, 8, 8)), ctx(van))
    with pytest.raises(ValueError, match="record_features"):
        FeatureCosine().compute(gen, ctx(van))


def test_ssim_rejects_tiny_images():
    with pytest.raises(ValueError, match="3x3"):
        ssim(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


# ------------------------------------------------------------------ FID / KID


def tiny_extractor(seed=0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh())


def images(n, seed, shift=0.0):
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) + shift).clamp(0, 1)


FID = MetricInfo("fid", "", False, "data")
KID = MetricInfo("kid", "", False, "data")


def test_fid_of_a_set_against_itself_is_zero(tmp_path):
    ext, real_images = tiny_extractor(), images(300, 0)
    real = RealFeatures("toy", real_images, ext, cache_dir=tmp_path)
    metric = FIDMetric(FID, ext, real, batch_size=128)
    c = ctx()
    assert metric.compute(batch(real_images), c) == pytest.approx(0.0, abs=1e-4)
    other = metric.compute(batch(images(300, 1, shift=0.3)), c)
    assert other > 0.05
    assert "real_features/toy" in c.cache and c.cache["real_features/toy"].shape == (300, 8)
    assert (tmp_path / "real_features" / "toy.safetensors").is_file()


def test_real_features_come_from_disk_cache(tmp_path):
    ext = tiny_extractor()
    first = RealFeatures("toy", images(50, 0), ext, cache_dir=tmp_path).get()

    def no_data():
        raise AssertionError("real images should not be needed with a disk cache")

    second = RealFeatures("toy", no_data, ext, cache_dir=tmp_path).get(ctx())
    torch.testing.assert_close(first, second)
    with pytest.raises(ValueError, match="file-name-safe"):
        RealFeatures("../x", no_data, ext, cache_dir=tmp_path)


def test_kid_zero_for_same_set_and_deterministic(tmp_path):
    ext, real_images = tiny_extractor(), images(200, 0)
    metric = KIDMetric(
        KID, ext, RealFeatures("toy", real_images, ext, cache_dir=False), subsets=20, subset_size=100
    )
    state = torch.random.get_rng_state()
    same = metric.compute(batch(real_images), ctx())
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert abs(same) < 5e-3
    shifted = batch(images(120, 1, shift=0.3))
    far = metric.compute(shifted, ctx())
    assert far > 10 * abs(same) and far == metric.compute(shifted, ctx())


def test_kid_metric_equals_torchmetrics_and_the_interval_reuses_the_features(tmp_path):
    from torchmetrics.image.kid import KernelInceptionDistance

    from bench.metrics import metric_interval

    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_extractor()

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    ext, real_images = Counting(), images(200, 0)
    real = RealFeatures("toy", real_images, ext, cache_dir=False)
    metric = KIDMetric(KID, ext, real, subsets=15, subset_size=60, seed=4)
    generated, c = batch(images(80, 1, shift=0.2)), ctx()
    value = metric.compute(generated, c)
    reference = KernelInceptionDistance(feature=ext.inner, subsets=15, subset_size=60)  # torchmetrics' own
    reference.real_features = [real.get(c).double()]
    reference.fake_features = [ext.inner(generated.images.float()).double()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        expected = float(reference.compute()[0])
    assert value == pytest.approx(expected, rel=1e-9)
    calls.clear()
    metric_interval(metric, generated, c, value)
    assert calls == []  # the interval reuses the features compute() extracted


def test_fid_needs_two_images(tmp_path):
    ext = tiny_extractor()
    metric = FIDMetric(FID, ext, RealFeatures("toy", images(20, 0), ext, cache_dir=False))
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute(batch(images(1, 0)), ctx())


def test_inception_score_bounds():
    confident = torch.eye(10) * 50  # one confident image per class
    assert inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.zeros(7, 10)) == pytest.approx(1.0)
    assert inception_score(confident[:1].repeat(5, 1)) == pytest.approx(1.0)


def test_inception_weights_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception.pth"):
        inception_v3_extractor(tmp_path / "inception.pth")
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05"):
        inception_v3_extractor(None)
    with pytest.raises(ValueError, match="2048"):
        inception_v3_extractor(tmp_path / "x.pth", feature=1000)


# ------------------------------------------------------------------ Fashion plugin


class StubClassifier(nn.Module):
    """Class = round(9 * mean intensity): a hand-checkable stand-in for the CNN."""

    def forward(self, x):
        k = (x.mean((1, 2, 3)) * 9).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(k, 10).float() * 20


def test_class_accuracy_with_stub_classifier():
    from base_models.fashion.metrics import ClassAccuracy, InceptionScore

    cond = torch.tensor([0, 3, 9, 5])
    imgs = (cond.float() / 9)[:, None, None, None].expand(4, 1, 32, 32).clone()
    imgs[3] = 0.0  # asked for class 5, looks like class 0
    metric = ClassAccuracy(StubClassifier())
    assert metric.compute(batch(imgs, cond=cond), ctx()) == pytest.approx(0.75)
    assert metric.info.reference == "condition"
    # predicted classes 0, 3, 9, 0: p(y) = (1/2, 1/4, 1/4); mean KL = (2 log 2 + 2 log 4) / 4 = 1.5 log 2
    assert InceptionScore(StubClassifier()).compute(batch(imgs, cond=cond), ctx()) == pytest.approx(
        2**1.5, rel=1e-4
    )
    with pytest.raises(ValueError, match=r"\(n, 1, 32, 32\)"):
        metric.compute(batch(torch.zeros(2, 1, 16, 16)), ctx())


def test_fashion_metrics_unavailable_for_other_models():
    from base_models.fashion.metrics import _class_accuracy, _fid, _inception_score, _kid

    imagenet_model = types.SimpleNamespace(name="maskgit-imagenet", dataset="imagenet")
    for factory in (_fid, _kid, _class_accuracy, _inception_score):
        with pytest.raises(MetricUnavailable, match="Fashion-MNIST"):
            factory(imagenet_model)


def test_metric_needing_a_dataset_refuses_other_models_in_one_line():
    from bench.metrics import require_dataset

    imagenet_model = types.SimpleNamespace(name="maskgit-imagenet", dataset="imagenet")
    require_dataset(imagenet_model, "imagenet", "fid_imagenet")  # fits: no error
    for other in ("fashion-mnist", None):
        model = types.SimpleNamespace(name="other", dataset=other)
        with pytest.raises(MetricUnavailable) as refused:
            require_dataset(model, "imagenet", "fid_imagenet")
        assert str(refused.value) == (
            f"fid_imagenet needs a base model trained on imagenet; base model 'other' has dataset={other!r}"
        )


def test_builtin_metric_specs_declare_their_labels():
    """Labels come from the specs (recorded in run.json by the runner), not from bench.plots."""
    from base_models.fashion import metric_hooks as fashion
    from bench import metric_hooks as generic
    from metrics import plugin as t2i

    specs = []
    for plugin in (generic, fashion, t2i):
        plugin.register_metrics(specs.append)
    labels = {s.info.name: s.info.label for s in specs}
    assert labels == {
        "psnr_vs_vanilla": "PSNR vs vanilla", "ssim_vs_vanilla": "SSIM vs vanilla",
        "token_agreement": "token agreement", "feature_cosine": "feature cosine",
        "fid_inception": "FID (Inception-v3)", "fid": "FID (Fashion classifier)", "kid": "KID (Fashion classifier)",
        "class_accuracy": "class accuracy (Fashion classifier)", "inception_score": "IS (Fashion classifier)",
        "clip_score": "CLIPScore", "image_reward": "ImageReward",
    }  # fmt: skip


def test_missing_classifier_makes_metric_unavailable(tmp_path):
    from base_models.fashion.metrics import classifier_for_metrics

    with pytest.raises(MetricUnavailable, match="absent.safetensors"):
        classifier_for_metrics(tmp_path / "absent.safetensors")


def test_plugins_register_all_metrics():
    from base_models.fashion import metric_hooks as metrics
    from bench import metric_hooks as generic

    specs = []
    metrics.register_metrics(specs.append)
    names = {s.info.name: s.info for s in specs}
    assert set(names) == {"fid", "kid", "class_accuracy", "inception_score"}
    generic_specs = []
    generic.register_metrics(generic_specs.append)  # fidelity metrics: a core built-in plugin
    assert {s.info.name for s in generic_specs} == {"psnr_vs_vanilla", "ssim_vs_vanilla", "token_agreement",
                                                    "feature_cosine", "fid_inception"}  # fmt: skip
    assert [s.info.name for s in generic_specs if not s.default] == ["fid_inception"]  # opt-in
    assert not names["fid"].higher_is_better and names["class_accuracy"].reference == "condition"


def test_fid_inception_is_opt_in_and_wired(tmp_path, monkeypatch):
    """Unavailable (naming both variables) until configured; then FID of the reference images
    against themselves is ~0 through the real plumbing (reference loading, feature cache,
    torchmetrics FID). The Inception network itself is replaced by a small stand-in: its
    weights cannot be fetched here."""
    import numpy as np

    from bench import metrics as generic
    from bench.protocol import GeneratedBatch
    from bench.specs import MetricContext, MetricUnavailable

    monkeypatch.delenv(generic.INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(generic.FID_REFERENCE_ENV, raising=False)
    with pytest.raises(MetricUnavailable, match="MIGM_INCEPTION_WEIGHTS.*MIGM_FID_REFERENCE"):
        generic.fid_inception_metric()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=images)
    (tmp_path / "inception.pth").write_bytes(b"stand-in weights")
    monkeypatch.setenv(generic.INCEPTION_WEIGHTS_ENV, str(tmp_path / "inception.pth"))
    monkeypatch.setenv(generic.FID_REFERENCE_ENV, str(tmp_path / "ref.npz"))
    monkeypatch.setenv("MIGM_BENCH_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    stand_in = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 6))
    monkeypatch.setattr(generic, "inception_v3_extractor", lambda path: stand_in)
    metric = generic.fid_inception_metric()
    real = generic.load_reference_images(tmp_path / "ref.npz")
    assert real.shape == (40, 3, 8, 8) and 0 <= real.min() and real.max() <= 1
    ctx = MetricContext(model=None, device=torch.device("cpu"))
    same = metric.compute(GeneratedBatch(images=real, tokens=torch.zeros(40, 4), cond=torch.zeros(40)), ctx)
    other = metric.compute(
        GeneratedBatch(images=real * 0.2, tokens=torch.zeros(40, 4), cond=torch.zeros(40)), ctx
    )
    assert abs(same) < 1e-3 and other > same + 1e-3


# ------------------------------------------------------------------ intervals over images
def test_per_image_values_average_to_the_metric_and_give_an_interval():
    from bench.metrics import metric_interval

    ref = batch(
        images(40, 0), tokens=torch.randint(0, 5, (40, 4), generator=torch.Generator().manual_seed(0))
    )
    noisy = (ref.images + 0.05 * torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))).clamp(
        0, 1
    )
    gen = batch(noisy, tokens=ref.tokens.flip(1))
    for metric in (PSNRVsVanilla(), SSIMVsVanilla(), TokenAgreement()):
        per = metric.per_image(gen, ctx(ref))
        assert per.shape == (40,)
        value = metric.compute(gen, ctx(ref))
        assert value == pytest.approx(float(per.mean()))
        ci = metric_interval(metric, gen, ctx(ref), value)
        assert ci.low < value < ci.high  # images differ from each other: a real spread
    assert psnr(gen.images, ref.images) == pytest.approx(PSNRVsVanilla().compute(gen, ctx(ref)))
    assert ssim(gen.images, ref.images) == pytest.approx(SSIMVsVanilla().compute(gen, ctx(ref)))


def test_fid_and_kid_of_resamples(tmp_path):
    """The identity 'resample' reproduces FID (own Fréchet distance vs torchmetrics); the
    spread over real resamples is positive and gives value +- 1.96 sd."""
    import numpy as np

    from bench.metrics import metric_interval

    ext, real_images = tiny_extractor(), images(300, 0)
    real = RealFeatures("toy", real_images, ext, cache_dir=False)
    fid = FIDMetric(FID, ext, real)
    gen = batch(images(100, 1, shift=0.2))
    value = fid.compute(gen, ctx())
    assert fid.resampled(gen, ctx(), np.arange(100)[None, :])[0] == pytest.approx(value, rel=1e-3)
    ci = metric_interval(fid, gen, ctx(), value)
    assert ci.low < value < ci.high and ci.high - value == pytest.approx(value - ci.low)
    kid = KIDMetric(KID, ext, real, subset_size=100)
    kid_values = kid.resampled(gen, ctx(), np.random.default_rng(0).integers(0, 100, (20, 100)))
    assert len(kid_values) == 20 and np.std(kid_values) > 0
    far = kid.compute(gen, ctx())
    assert np.median(kid_values) == pytest.approx(far, rel=0.5)  # the same quantity, resampled
