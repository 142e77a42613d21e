"""Fashion-MNIST feature network: shapes, weight-file validation, a tiny resumable training run."""

from __future__ import annotations

import json

import pytest
import torch

from base_models.fashion.classifier import (
    ClassifierConfig,
    ClassifierWeightsError,
    ClassifierWeightsMissing,
    FashionClassifier,
    PenultimateFeatures,
    _random_shift,
    load_classifier,
    train_classifier,
)
from base_models.fashion.training import ship_weights


def small_classifier(seed: int = 0, **cfg) -> FashionClassifier:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FashionClassifier(ClassifierConfig(**cfg)).eval()


def ship(path, model, **extra):
    meta = {"kind": "fashion-classifier", "config": model.cfg.to_dict(), **extra}
    ship_weights(path, model, meta)
    return path


def test_shapes_and_input_errors():
    model = small_classifier()
    x = torch.rand(3, 1, 32, 32)
    assert model(x).shape == (3, 10)
    assert model.features(x).shape == (3, 128)
    assert (model.features(x) >= 0).all()  # post-ReLU
    assert PenultimateFeatures(model)(x).shape == (3, 128)
    with pytest.raises(ValueError, match=r"\(n, 1, 32, 32\)"):
        model(torch.rand(3, 1, 28, 28))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(3, 1, 32, 32, dtype=torch.uint8))


def test_penultimate_view_stays_in_eval_mode():
    model = small_classifier()
    view = PenultimateFeatures(model)
    view.train()
    assert not model.training
    assert view.num_features == 128


def test_roundtrip(tmp_path):
    model = small_classifier(seed=3)
    path = ship(tmp_path / "clf.safetensors", model, test_accuracy=0.5)
    loaded = load_classifier(path)
    x = torch.rand(4, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.metadata["test_accuracy"] == 0.5
    assert len(loaded.weights_hash) == 16 and not loaded.training


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ClassifierWeightsMissing, match="nope.safetensors") as err:
        load_classifier(path)
    assert "train-base classifier" in str(err.value)


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(ClassifierWeightsError, match="corrupt.safetensors.*corrupt"):
        load_classifier(path)


def test_wrong_shapes_name_the_tensor(tmp_path):
    narrow = small_classifier(channels=(8, 16, 32))
    path = tmp_path / "narrow.safetensors"
    ship_weights(path, narrow, {"kind": "fashion-classifier", "config": ClassifierConfig().to_dict()})  # lies
    with pytest.raises(
        ClassifierWeightsError, match=r"narrow.safetensors.*conv.0.weight has shape \(8, 1, 3, 3\)"
    ):
        load_classifier(path)


def test_missing_tensor_and_wrong_kind(tmp_path):
    model = small_classifier()
    path = tmp_path / "partial.safetensors"
    ship_weights(path, model.fc, {"kind": "fashion-classifier", "config": model.cfg.to_dict()})  # head only
    with pytest.raises(
        ClassifierWeightsError, match="partial.safetensors.*missing tensors.*unexpected tensors"
    ):
        load_classifier(path)
    other = tmp_path / "other.safetensors"
    ship_weights(other, model, {"kind": "vqgan", "config": model.cfg.to_dict()})
    with pytest.raises(ClassifierWeightsError, match="other.safetensors is not a Fashion-MNIST classifier"):
        load_classifier(other)


def test_random_shift_translates():
    x = torch.zeros(5, 1, 8, 8)
    x[:, 0, 3:5, 3:5] = 1.0
    out = _random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # content moved, not lost
    assert _random_shift(x, 0, torch.Generator()) is x


def test_train_tiny_and_resume(tmp_path, fake_fashion):
    out, work, curve = tmp_path / "clf.safetensors", tmp_path / "work", tmp_path / "curve.csv"
    kwargs = {"out": out, "batch_size": 64, "seed": 0, "work": work, "data_root": fake_fashion, "curve": curve,
                  "config": ClassifierConfig(channels=(4, 8, 8), feature_dim=16), "progress": False}  # fmt: skip
    meta = train_classifier(epochs=1, **kwargs)
    assert (work / "classifier.pt").is_file()
    loaded = load_classifier(out)
    assert loaded.metadata["data_hash"] == meta["data_hash"] and len(meta["data_hash"]) == 16
    assert loaded.metadata["training"]["epochs"] == 1
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    rows = curve.read_text().splitlines()
    assert rows[0] == "epoch,step,train_loss,train_acc,test_loss,test_acc,elapsed_s" and len(rows) == 2
    # resume: a second epoch continues from step 4 (256 // 64), writing one more curve row
    meta2 = train_classifier(epochs=2, **kwargs)
    assert meta2["training"]["epochs"] == 2
    rows = curve.read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "4"], ["2", "8"]]
    state = torch.load(work / "classifier.pt", weights_only=False)
    assert state["step"] == 8
    assert json.loads(json.dumps(meta2))["config"]["channels"] == [4, 8, 8]
