"""The text-to-image default's caption parser, attribute classifier and its metrics
(``base_models.fashion_t2i.parse``, ``attributes``, ``t2i_metrics``)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from base_models.fashion.classifier import ClassifierConfig, FashionClassifier
from base_models.fashion.data import DatasetMissing, load_fashion_mnist
from base_models.fashion_t2i import attributes, metric_hooks_t2i, t2i_metrics
from base_models.fashion_t2i.attributes import (
    ATTRIBUTE_SIZES,
    AttributeTrainSettings,
    AttributeWeightsError,
    AttributeWeightsMissing,
    load_attribute_classifier,
    predict,
    train_attributes,
)
from base_models.fashion_t2i.captions import held_out_triples, make_split, realise, render_caption
from base_models.fashion_t2i.parse import parse_caption, parse_captions
from bench.metrics import metric_interval
from bench.protocol import GeneratedBatch
from bench.real_features import RealFeatures
from bench.specs import MetricContext, MetricUnavailable, MetricValue

N_TINY = 32
TINY_SETTINGS = AttributeTrainSettings(steps=40, batch_size=16, warmup=5, log_every=1, checkpoint_every=20)
ACCURACY_METRICS = (
    "attribute_accuracy",
    "attr_class_accuracy",
    "attr_size_accuracy",
    "attr_position_accuracy",
    "attr_tone_accuracy",
)


# ---------------------------------------------------------------------------- parser
def test_parse_inverts_every_label_combination_and_phrasing():
    gen = torch.Generator().manual_seed(0)
    for cls in range(10):
        for size in range(3):
            for pos in range(5):
                for tone in range(4):
                    labels = torch.tensor([cls, size, pos, tone])
                    for _ in range(25):  # phrasings and templates drawn from gen
                        caption = render_caption(labels, gen)
                        assert torch.equal(parse_caption(caption), labels), caption


@pytest.mark.parametrize(
    ("caption", "labels"),
    [
        ("a top at the top", (0, 1, 3, 0)),  # "top" the garment and "at the top" the position
        ("upper top, white on black", (0, 1, 3, 0)),
        ("a t-shirt near the top", (0, 1, 3, 0)),
        ("a shirt", (6, 1, 0, 0)),  # not the t-shirt
        ("a button-up shirt", (6, 1, 0, 0)),
        ("an ankle boot", (9, 1, 0, 0)),
        ("a boot", (9, 1, 0, 0)),
        ("a trainer", (7, 1, 0, 0)),
        ("a photo of a big boot near the bottom, inverted", (9, 2, 4, 3)),
        ("an inverted coat, small, on the left", (4, 0, 1, 3)),
        ("a tiny dim pair of slacks on the right side", (1, 0, 2, 1)),
        ("jumper in the middle, medium-sized, brightly lit", (2, 1, 0, 2)),
    ],
)
def test_parse_hand_written_captions(caption, labels):
    assert parse_caption(caption).tolist() == list(labels)


@pytest.mark.parametrize(
    "caption", ["a red square", "", "a top at the top at the top", "A top", "a t-shirt ", "a sock"]
)
def test_parse_rejects_text_outside_the_grammar(caption):
    with pytest.raises(ValueError, match="not a caption of the fashion-t2i grammar") as err:
        parse_caption(caption)
    assert repr(caption) in str(err.value) and "\n" not in str(err.value)


def test_parse_captions_stacks():
    assert parse_captions(["a boot", "a small bag"]).tolist() == [[9, 1, 0, 0], [8, 0, 0, 0]]
    assert parse_captions([]).shape == (0, 4)


# ---------------------------------------------------------------------------- classifier
def test_predict_splits_the_heads():
    logits = torch.full((1, sum(ATTRIBUTE_SIZES)), -1.0)
    for offset, k in zip((0, 10, 13, 18), (7, 2, 4, 1)):
        logits[0, offset + k] = 1.0
    assert predict(logits).tolist() == [[7, 2, 4, 1]]


@pytest.fixture(scope="module")
def trained(tiny_fashion, tmp_path_factory):
    """40 steps on the 32 tiny train images; returns (weights path, metadata, logged losses)."""
    folder = tmp_path_factory.mktemp("attributes")
    losses: list[float] = []

    def log(message: str) -> None:
        if " loss " in message:
            losses.append(float(message.split(" loss ")[1].split()[0]))

    settings = TINY_SETTINGS
    meta = train_attributes(
        folder / "attributes-t2i.safetensors", folder / "work", settings, tiny_fashion, log=log
    )
    return folder / "attributes-t2i.safetensors", meta, losses


def test_training_lowers_the_loss_and_reports_accuracy(trained):
    _, meta, losses = trained
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5  # fresh attributes every 2 steps: no overfit
    assert meta["steps"] == 40
    for split in ("test", "heldout"):
        acc = meta[f"{split}_accuracy"]
        assert set(acc) == {"cls_accuracy", "size_accuracy", "position_accuracy", "tone_accuracy",
                            "attribute_accuracy"}  # fmt: skip
        assert all(0.0 <= v <= 1.0 for v in acc.values())


def test_a_resumed_run_ends_with_the_weights_of_a_straight_one(trained, tiny_fashion, tmp_path):
    from safetensors.torch import load_file

    def stop_after_the_checkpoint(message: str) -> None:
        if message.startswith("attributes-t2i step 21/"):
            raise KeyboardInterrupt

    out = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_attributes(
            out, tmp_path, TINY_SETTINGS, tiny_fashion, eval_images=0, log=stop_after_the_checkpoint
        )
    meta = train_attributes(out, tmp_path, TINY_SETTINGS, tiny_fashion, eval_images=0, log=lambda m: None)
    assert meta["resumed_from"] == 20
    straight, resumed = load_file(str(trained[0])), load_file(str(out))
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_shipped_file_loads_strictly_with_its_metadata(trained):
    path, meta, _ = trained
    model = load_attribute_classifier(path)
    assert not model.training
    assert model.metadata["steps"] == 40 and model.metadata["heldout_accuracy"] == meta["heldout_accuracy"]
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert predict(model(x)).shape == (3, 4)


def test_wrong_keys_are_a_one_line_error_naming_the_file(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, _, _ = trained
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["fc.extra"] = tensors.pop("fc.bias")
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(AttributeWeightsError, match="fc.bias") as err:
        load_attribute_classifier(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_missing_weights_name_the_training_command(tmp_path):
    with pytest.raises(AttributeWeightsMissing, match="migm-bench train-base attributes-t2i --ship"):
        load_attribute_classifier(tmp_path / "none.safetensors")


def test_train_base_command_writes_the_weights(tiny_fashion, tmp_path, default_manager, capsys):
    from base_models.fashion import commands
    from bench.cli import main

    default_manager.register(commands)
    out = tmp_path / "out"
    args = ["--steps", "2", "--batch-size", "8", "--data", str(tiny_fashion), "--work", str(tmp_path / "w"),
            "--out", str(out), "--eval-images", "8"]  # fmt: skip
    assert main(["train-base", "attributes-t2i", *args]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["steps"] == 2 and meta["settings"]["batch_size"] == 8
    assert load_attribute_classifier(out / "attributes-t2i.safetensors").metadata["steps"] == 2


# ---------------------------------------------------------------------------- accuracy metrics
class StubClassifier(nn.Module):
    """Predicts row ``i`` of ``predicted`` for an image whose top-left pixel is i / 100 (the
    test writes it there); counts its forwards."""

    def __init__(self, predicted: list[list[int]]) -> None:
        super().__init__()
        logits = torch.full((len(predicted), sum(ATTRIBUTE_SIZES)), -5.0)
        for i, labels in enumerate(predicted):
            for offset, k in zip((0, 10, 13, 18), labels):
                logits[i, offset + k] = 5.0
        self.table = logits
        self.fc = nn.Identity()
        self.forwards = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.table[(x[:, 0, 0, 0] * 100).round().long()]


def _t2i_batch(images: torch.Tensor, labels: torch.Tensor) -> GeneratedBatch:
    gen = torch.Generator().manual_seed(3)
    captions = [render_caption(row, gen) for row in labels]
    return GeneratedBatch(images=images, tokens=torch.zeros(len(images), 1, dtype=torch.long),
                          cond=torch.arange(len(images)), prompts=captions)  # fmt: skip


@pytest.fixture(scope="module")
def real_batch(tiny_fashion):
    """4 realised test images with their true captions; the top-left pixel holds the image index."""
    data = make_split("test", root=tiny_fashion, limit=4)
    batch = data.batch(torch.arange(4))
    images = batch.images.clone()
    images[:, 0, 0, 0] = torch.arange(4) / 100
    return _t2i_batch(images, batch.labels), batch.labels


def _metrics(classifier) -> dict[str, t2i_metrics.AttributeAccuracy]:
    infos = {info.name: (info, (k,)) for k, info in enumerate(t2i_metrics.ATTR_INFOS.values())}
    infos["attribute_accuracy"] = (t2i_metrics.ATTRIBUTE_ACCURACY_INFO, (0, 1, 2, 3))
    return {
        name: t2i_metrics.AttributeAccuracy(info, classifier, cols) for name, (info, cols) in infos.items()
    }


def _values(metrics, batch) -> dict[str, float]:
    ctx = MetricContext(model=None, device=torch.device("cpu"))
    return {name: m.compute(batch, ctx) for name, m in metrics.items()}


def test_two_of_four_wrong_in_position(real_batch):
    batch, labels = real_batch
    predicted = labels.clone()
    predicted[1, 2] = (predicted[1, 2] + 1) % 5
    predicted[3, 2] = (predicted[3, 2] + 2) % 5
    values = _values(_metrics(StubClassifier(predicted.tolist())), batch)
    assert values == {"attr_class_accuracy": 1.0, "attr_size_accuracy": 1.0, "attr_position_accuracy": 0.5,
                      "attr_tone_accuracy": 1.0, "attribute_accuracy": 0.5}  # fmt: skip
    assert values["attribute_accuracy"].per_image.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert isinstance(values["attr_position_accuracy"], MetricValue)
    interval = metric_interval(
        None, batch, None, values["attribute_accuracy"]
    )  # bootstrap of the per-image values
    assert interval.value == 0.5 and 0.0 <= interval.low < 0.5 < interval.high <= 1.0


def test_errors_spread_over_attributes(real_batch):
    batch, labels = real_batch
    predicted = labels.clone()
    predicted[0, 0] = (predicted[0, 0] + 1) % 10  # image 0: class and tone wrong
    predicted[0, 3] = (predicted[0, 3] + 1) % 4
    predicted[1, 1] = (predicted[1, 1] + 1) % 3  # image 1: size wrong
    values = _values(_metrics(StubClassifier(predicted.tolist())), batch)
    assert values == {"attr_class_accuracy": 0.75, "attr_size_accuracy": 0.75, "attr_position_accuracy": 1.0,
                      "attr_tone_accuracy": 0.75, "attribute_accuracy": 0.5}  # fmt: skip


def test_one_classifier_forward_for_all_metrics_of_a_batch(real_batch):
    batch, labels = real_batch
    stub = StubClassifier(labels.tolist())
    metrics = _metrics(stub)
    assert set(_values(metrics, batch).values()) == {1.0}
    assert stub.forwards == 1
    _values(metrics, _t2i_batch(batch.images.clone(), labels))  # a new batch: one more forward
    assert stub.forwards == 2


def test_accuracy_needs_captions(real_batch):
    batch, labels = real_batch
    metric = _metrics(StubClassifier(labels.tolist()))["attribute_accuracy"]
    no_prompts = GeneratedBatch(images=batch.images, tokens=batch.tokens, cond=batch.cond)
    with pytest.raises(ValueError, match="attribute_accuracy: needs one caption per image"):
        metric.compute(no_prompts, MetricContext(model=None, device=torch.device("cpu")))


# ---------------------------------------------------------------------------- factories and registration
T2I_MODEL = SimpleNamespace(name="fashion-t2i", dataset="fashion-mnist-t2i")


@pytest.mark.parametrize("name", [*ACCURACY_METRICS, "fid_attributes", "kid_attributes"])
def test_factories_refuse_other_models_and_missing_weights(name, manager, monkeypatch, tmp_path):
    manager.register(metric_hooks_t2i)
    spec = manager.metrics()[name]
    assert not spec.default
    fashion = SimpleNamespace(name="fashion", dataset="fashion-mnist")
    with pytest.raises(MetricUnavailable, match=f"{name} needs the fashion-t2i model.*'fashion-mnist'"):
        spec.factory(fashion)
    monkeypatch.setattr(attributes, "SHIPPED_WEIGHTS", tmp_path / "none.safetensors")
    with pytest.raises(MetricUnavailable, match="train-base attributes-t2i --ship"):
        spec.factory(T2I_MODEL)
    assert spec.unavailable() is None  # skipped with the reason in a run, not a start-up failure


def test_factories_build_with_weights(trained, manager, monkeypatch, tiny_fashion):
    monkeypatch.setattr(attributes, "SHIPPED_WEIGHTS", trained[0])
    monkeypatch.setenv("MIGM_FASHION_MNIST", str(tiny_fashion))
    manager.register(metric_hooks_t2i)
    specs = manager.metrics()
    metric = specs["attr_tone_accuracy"].factory(T2I_MODEL)
    assert metric.columns == [3] and metric.info.label == "tone accuracy (attribute classifier)"
    fid = specs["fid_attributes"].factory(T2I_MODEL)
    assert fid.info.label == "FID (attribute classifier)"


# ---------------------------------------------------------------------------- FID / KID
@pytest.fixture(scope="module")
def realised_heldout():
    """600 realised held-out images (first test garments) and the same garments inverted at
    the same size and position; skipped without the data set."""
    try:
        data = make_split("heldout", limit=600)
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not installed")
    inverted = data.labels.clone()
    inverted[:, 3] = 3
    return realise(data.garments, data.labels), realise(data.garments, inverted)


def _feature_metrics(real_images: torch.Tensor):
    clf = FashionClassifier(ClassifierConfig(num_classes=sum(ATTRIBUTE_SIZES))).eval()
    real = RealFeatures("test-attr", real_images, t2i_metrics.PenultimateFeatures(clf), cache_dir=False)
    return t2i_metrics.AttributeFID(clf, real), t2i_metrics.AttributeKID(clf, real)


def test_fid_and_kid_of_a_set_against_itself_are_zero(realised_heldout):
    images, plain = realised_heldout
    fid, kid = _feature_metrics(images)
    ctx = MetricContext(model=None, device=torch.device("cpu"))
    same = GeneratedBatch(images=images, tokens=torch.zeros(len(images), 1), cond=torch.zeros(len(images)))
    other = GeneratedBatch(images=plain, tokens=torch.zeros(len(images), 1), cond=torch.zeros(len(images)))
    fid_self, fid_other = fid.compute(same, ctx), fid.compute(other, ctx)
    assert abs(fid_self) < 1e-3 * fid_other and fid_other > 0
    kid_self, kid_other = kid.compute(same, ctx), kid.compute(other, ctx)
    assert abs(kid_self) < 1e-2 * kid_other


def test_heldout_images_are_realised_with_heldout_triples(tiny_fashion):
    images = t2i_metrics.heldout_images(str(tiny_fashion))
    data = make_split("heldout", root=tiny_fashion)
    assert images.shape == (N_TINY, 1, 32, 32)
    assert torch.equal(images, realise(data.garments, data.labels))
    assert all(tuple(row[:3]) in held_out_triples() for row in data.labels.tolist())
    assert len(load_fashion_mnist("test", tiny_fashion)[0]) == N_TINY


def test_the_classifier_trains_on_every_combination_the_held_out_ones_included():
    """The attribute classifier is an instrument: its training draw covers every (size, position,
    tone), the 20 held-out (class, size, position) triples included, each about as often as any
    other (a classifier trained on the seen split alone read held-out classes right 26 % of the
    time)."""
    from base_models.fashion_t2i.captions import POSITIONS, SIZES, TONES, held_out_triples, sample_any_labels

    classes = torch.arange(10).repeat(6000)  # (60000,)
    labels = sample_any_labels(classes, torch.Generator().manual_seed(0))
    assert labels.shape == (60000, 4) and torch.equal(labels[:, 0], classes)
    triples = {tuple(t) for t in labels[:, :3].tolist()}
    assert held_out_triples() <= triples and len(triples) == 10 * len(SIZES) * len(POSITIONS)
    counts = torch.bincount(labels[:, 1] * len(POSITIONS) + labels[:, 2], minlength=15).float()
    assert counts.min() > 0.9 * counts.mean()  # uniform over the 15 (size, position) pairs
    assert set(labels[:, 3].tolist()) == set(range(len(TONES)))
