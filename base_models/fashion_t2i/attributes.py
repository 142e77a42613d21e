"""The attribute classifier of the text-to-image default: reads (class, size, position, tone)
off a 1x32x32 image, for attribute accuracy against the caption and, through its penultimate
features, FID / KID of the text-to-image model (issue 14, item 4).

Network: the class-conditional default's feature network (``base_models.fashion.classifier.
FashionClassifier``: 3 conv-BN-ReLU-maxpool blocks, a 128-d penultimate layer) with one output
layer of 10 + 3 + 5 + 4 = 22 logits, split into the four heads (``ATTRIBUTE_SIZES``). The 4x4
map before the projection keeps where the garment is; the loss is the sum of the four
cross-entropies. ``PenultimateFeatures`` of it are the FID/KID features.

Data: the training garments with attributes drawn uniformly over *every* (size, position,
tone), the held-out (class, size, position) combinations included
(``captions.sample_any_labels``), a fresh draw every epoch (``epochs.batch_indices``, as the
other text-to-image trainers). The classifier is an instrument, not a model under test: trained
on the training split's gaps it would take size and position as cues for the class (a first run
so trained read the class of held-out images right 26 % of the time, against 86 % on seen
ones), and held-out prompts would then be scored by its blind spot. It never sees a test image; checkpoint and schedule from
``bench.training``, so a resumed run ends with the weights of a straight one. Shipped:
``weights/attributes-t2i.safetensors``, its header holding config, settings, steps and the
per-attribute accuracy on the test and held-out splits.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from base_models.fashion.classifier import ClassifierConfig, FashionClassifier
from base_models.fashion.data import data_hash, load_fashion_mnist
from base_models.fashion.training import ship_weights
from base_models.fashion_t2i.captions import (
    ATTRIBUTES,
    CLASS_WORDS,
    POSITIONS,
    SIZES,
    TONES,
    CaptionSet,
    make_split,
    realise,
    sample_any_labels,
)
from base_models.fashion_t2i.epochs import batch_indices
from base_models.maskgit.checkpoint import decode_metadata
from bench.integrity import verify
from bench.metrics import file_hash
from bench.results import atomic_write_text
from bench.training import (
    TrainingCurve,
    load_checkpoint,
    lr_scheduler,
    optimizer_step,
    save_checkpoint,
    warmup_cosine,
)

WEIGHTS_FILE = "attributes-t2i.safetensors"
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / WEIGHTS_FILE
WEIGHTS_KIND = "fashion-t2i-attributes"
TRAIN_COMMAND = "migm-bench train-base attributes-t2i --ship"
ATTRIBUTE_SIZES = (len(CLASS_WORDS), len(SIZES), len(POSITIONS), len(TONES))  # heads, in ATTRIBUTES order
ATTRIBUTES_CONFIG = ClassifierConfig(num_classes=sum(ATTRIBUTE_SIZES))
CURVE_FIELDS = ("step", "loss", *(f"acc_{a}" for a in ATTRIBUTES), "elapsed_s")


class AttributeWeightsError(RuntimeError):
    """The attribute classifier's weights file is corrupt or does not fit the network."""


class AttributeWeightsMissing(AttributeWeightsError, FileNotFoundError):
    """No attribute classifier weights at the path (not trained / not shipped yet)."""


def split_heads(logits: Tensor) -> list[Tensor]:
    """(n, 22) logits -> the four heads' logits [(n, 10), (n, 3), (n, 5), (n, 4)]."""
    return list(logits.split(ATTRIBUTE_SIZES, dim=1))


def predict(logits: Tensor) -> Tensor:
    """(n, 22) logits -> (n, 4) predicted labels (class, size, position, tone)."""
    return torch.stack([head.argmax(1) for head in split_heads(logits)], dim=1)


def attribute_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Sum over the four heads of the cross-entropy; labels (n, 4) long."""
    return sum(F.cross_entropy(head, labels[:, k]) for k, head in enumerate(split_heads(logits)))


def build_attribute_classifier(
    seed: int = 0, config: ClassifierConfig = ATTRIBUTES_CONFIG
) -> FashionClassifier:
    """A freshly initialised network (weights from ``seed``; global RNG untouched)."""
    if config.num_classes != sum(ATTRIBUTE_SIZES):
        raise ValueError(
            f"attribute classifier needs {sum(ATTRIBUTE_SIZES)} outputs, config has {config.num_classes}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FashionClassifier(config)


# ---------------------------------------------------------------------------- loading


def load_attribute_classifier(path: str | Path = SHIPPED_WEIGHTS) -> FashionClassifier:
    """The network of ``path`` in eval mode, strictly loaded, with ``metadata`` and
    ``weights_hash`` attached; one-line errors naming the file when it is missing or wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    if not path.is_file():
        raise AttributeWeightsMissing(f"attribute classifier weights not found: {path}; train them with "
                                      f"`{TRAIN_COMMAND}`")  # fmt: skip
    verify(path)  # shipped files: bytes must match their folder's INTEGRITY.json
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = decode_metadata(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise AttributeWeightsError(f"{path} is not a readable safetensors file: {e}") from e
    if meta.get("kind") != WEIGHTS_KIND:
        raise AttributeWeightsError(f"{path}: metadata kind={meta.get('kind')!r}, want {WEIGHTS_KIND!r}")
    try:
        config = ClassifierConfig.from_dict(meta["config"])
    except (KeyError, TypeError) as e:
        raise AttributeWeightsError(f"{path}: metadata 'config' is missing or malformed ({e!r})") from e
    model = build_attribute_classifier(config=config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())  # torch's message spans lines
        raise AttributeWeightsError(f"{path} does not fit the attribute classifier: {detail}") from e
    model.metadata = meta
    model.weights_hash = file_hash(path)
    return model.eval()


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class AttributeTrainSettings:
    steps: int = 3000  # batches of 128: ~6.4 epochs, a fresh attribute draw each; ~10 min on 2 quiet cores
    batch_size: int = 128
    lr: float = 2e-3  # AdamW, warm-up then cosine to 10%
    weight_decay: float = 1e-4
    warmup: int = 100
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 200
    train_limit: int | None = None  # use only the first n train images (tests)


def _draw_generator(seed: int, epoch: int) -> torch.Generator:
    """The attribute draw of ``epoch``: a function of (seed, epoch), so a resumed run draws the same."""
    return torch.Generator().manual_seed(seed * 1_000_003 + 77_777 + epoch)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate_attributes(model: FashionClassifier, data: CaptionSet, batch: int = 1000) -> dict[str, float]:
    """Per-attribute accuracy and all-four accuracy of ``model`` on every example of ``data``."""
    was_training = model.training
    model.eval()
    correct, n = torch.zeros(len(ATTRIBUTES) + 1), len(data)
    for i in range(0, n, batch):
        index = torch.arange(i, min(i + batch, n))
        labels = data.labels[index]  # (b, 4)
        hit = predict(model(realise(data.garments[index], labels))) == labels  # (b, 4)
        correct += torch.cat([hit.sum(0), hit.all(1).sum()[None]]).float()
    model.train(was_training)
    names = [f"{a}_accuracy" for a in ATTRIBUTES] + ["attribute_accuracy"]
    return {name: round(float(c) / max(1, n), 5) for name, c in zip(names, correct)}


def train_attributes(
    out: str | Path,
    work: str | Path,
    settings: AttributeTrainSettings = AttributeTrainSettings(),
    data_root=None,
    eval_images: int | None = None,
    curve: Path | None = None,
    log=_log,
) -> dict:
    """Train (resuming from ``work``/attributes-t2i.pt), write the weights file ``out`` and
    report accuracy on the first ``eval_images`` images (None: all) of the test and held-out
    splits (0: skip). Returns the metadata written into the file's header."""
    out, work = Path(out), Path(work)
    garments, classes = load_fashion_mnist("train", data_root)
    garments, classes = garments[: settings.train_limit], classes[: settings.train_limit]
    model = build_attribute_classifier(settings.seed).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = lr_scheduler(opt, warmup_cosine(settings.steps, settings.warmup))
    parts = {"model": model, "opt": opt, "scheduler": schedule}
    step, _ = load_checkpoint(work / "attributes-t2i.pt", parts)
    resumed_from = step
    curve_csv = TrainingCurve(curve or work / "attributes-t2i.csv", CURVE_FIELDS, "step", step)
    drawn: tuple[int, Tensor] | None = None  # (epoch, labels (n, 4) of that epoch's draw)
    loss, start = None, time.perf_counter()
    while step < settings.steps:
        epoch, index = batch_indices(len(classes), settings.batch_size, settings.seed, step)
        if drawn is None or drawn[0] != epoch:  # a fresh draw of attributes per epoch
            drawn = (epoch, sample_any_labels(classes, _draw_generator(settings.seed, epoch)))
        labels = drawn[1][index]  # (B, 4)
        logits = model(realise(garments[index], labels))  # (B, 22)
        loss = attribute_loss(logits, labels)
        optimizer_step(loss, opt, schedule)
        step += 1
        if step % settings.log_every == 0 or step == settings.steps:
            hit = (predict(logits) == labels).float().mean(0)  # (4,) this batch's accuracies
            log(f"attributes-t2i step {step}/{settings.steps} loss {loss.item():.4f} "
                + " ".join(f"{a} {h:.3f}" for a, h in zip(ATTRIBUTES, hit.tolist())))  # fmt: skip
            accuracy = {f"acc_{a}": h for a, h in zip(ATTRIBUTES, hit.tolist())}
            curve_csv.write({"step": step, "loss": loss.item(), **accuracy,
                             "elapsed_s": round(time.perf_counter() - start, 1)})  # fmt: skip
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            save_checkpoint(work / "attributes-t2i.pt", step, parts)
    meta = {"kind": WEIGHTS_KIND, "config": ATTRIBUTES_CONFIG.to_dict(), "settings": asdict(settings),
            "steps": step, "resumed_from": resumed_from, "data_hash": data_hash(garments, classes),
            "final_loss": None if loss is None else loss.item(),
            "train_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    if eval_images != 0:
        for split in ("test", "heldout"):
            meta[f"{split}_accuracy"] = evaluate_attributes(
                model, make_split(split, 0, 0, data_root, eval_images)
            )
            log(f"attributes-t2i {split}: {meta[f'{split}_accuracy']}")
    ship_weights(out, model, meta)
    atomic_write_text(work / "attributes-t2i_eval.json", json.dumps(meta, indent=1))
    return {**meta, "weights": str(out)}
