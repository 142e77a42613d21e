"""The Fashion-MNIST feature network: a small CNN whose 128-d penultimate layer stands in
for Inception-v3's pool features (FID/KID) and whose logits give class accuracy and an
Inception-Score-style number for the embedded default model.

Role as in FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule...")
and KID (Binkowski et al. 2018): a fixed network trained on the real data, whose
penultimate activations are compared between real and generated sets. Domain-specific
feature networks for MNIST-like data are common practice (e.g. the LeNet features of
Sajjadi et al. 2018); this one is trained here, on the train split only.

Input: (n, 1, 32, 32) float in [0, 1], i.e. 28x28 Fashion-MNIST zero-padded by 2 pixels
on each side (``base_models.fashion.data.to_model_images``), the same as the images the
``fashion`` base model decodes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_models.fashion.training import ship_weights
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

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "classifier.safetensors"
DEFAULT_CURVE = Path("results/training/classifier.csv")
CURVE_FIELDS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "elapsed_s")
WEIGHTS_KIND = "fashion-classifier"
TRAIN_HINT = (
    "train it with `migm-bench train-base classifier` (or base_models.fashion.classifier.train_classifier)"
)


@dataclass(frozen=True)
class ClassifierConfig:
    """channels: widths of the 3 conv blocks (conv3x3-BN-ReLU-maxpool2: 32 -> 16 -> 8 -> 4 px).
    Wider: more accurate features, slower FID. feature_dim: the penultimate (FID) feature
    size. image_size / in_channels: the input it accepts (1x32x32)."""

    channels: tuple[int, int, int] = (32, 64, 128)
    feature_dim: int = 128
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


class ClassifierWeightsError(RuntimeError):
    """The classifier weights file is missing, corrupt or does not fit the network."""


class ClassifierWeightsMissing(ClassifierWeightsError, FileNotFoundError):
    """The classifier weights file does not exist (not trained / not shipped yet)."""


class FashionClassifier(nn.Module):
    """3 conv blocks (conv-BN-ReLU-maxpool) -> Linear -> BN -> ReLU (128-d features) -> Linear (10)."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        for c_out in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(cfg.channels)  # 32 / 8 = 4
        self.proj = nn.Sequential(
            nn.Linear(c_in * side * side, cfg.feature_dim, bias=False),
            nn.BatchNorm1d(cfg.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def _check_input(self, x: Tensor) -> None:
        want = (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"classifier expects images of shape (n, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"classifier expects float images in [0, 1], got dtype {x.dtype}")

    def features(self, x: Tensor) -> Tensor:
        """(n, 1, 32, 32) in [0, 1] -> (n, feature_dim) penultimate activations (post-ReLU)."""
        self._check_input(x)
        h = self.conv(x * 2 - 1)  # (n, C, 4, 4); centring the input helps the first BN-free conv
        return self.proj(h.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        """(n, 1, 32, 32) in [0, 1] -> (n, num_classes) logits."""
        return self.fc(self.features(x))


class PenultimateFeatures(nn.Module):
    """Feature-extractor view for torchmetrics FID/KID: float images -> (n, d), always in
    eval mode and without autograd (torchmetrics calls ``module(imgs)`` directly)."""

    def __init__(self, classifier: FashionClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.cfg.feature_dim  # read by torchmetrics: skips its dummy forward

    def train(self, mode: bool = True) -> PenultimateFeatures:
        return super().train(False)  # BN must use its running statistics

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.features(x.float())


# ---------------------------------------------------------------------------- loading


def load_classifier(path: str | Path | None = None, device: torch.device | str = "cpu") -> FashionClassifier:
    """Load and validate shipped classifier weights (default ``weights/classifier.safetensors``).

    Raises ClassifierWeightsError naming the file and what is wrong when it is missing,
    not a safetensors file, lacks the config metadata, or has missing / unexpected /
    wrongly shaped tensors. The returned module is in eval mode and carries ``metadata``
    (the decoded safetensors metadata) and ``weights_hash`` (sha256 prefix of the file).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise ClassifierWeightsMissing(f"classifier weights not found: {path}; {TRAIN_HINT}")
    verify(path)  # shipped files: bytes must match their folder's INTEGRITY.json
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError) as e:
        raise ClassifierWeightsError(
            f"classifier weights file {path} is corrupt or not a safetensors file: {e}"
        ) from e
    meta = decode_metadata(raw_meta)
    if meta.get("kind") != WEIGHTS_KIND:
        raise ClassifierWeightsError(
            f"{path} is not a Fashion-MNIST classifier file (metadata kind={meta.get('kind')!r}, want {WEIGHTS_KIND!r})"
        )
    try:
        cfg = ClassifierConfig.from_dict(meta["config"])
    except (KeyError, TypeError) as e:
        raise ClassifierWeightsError(f"{path}: metadata 'config' is missing or malformed ({e!r})") from e
    model = FashionClassifier(cfg)
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    for k in sorted(set(expected) & set(tensors)):
        if tuple(expected[k].shape) != tuple(tensors[k].shape):
            problems.append(f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k].shape)}")
    if problems:
        raise ClassifierWeightsError(
            f"classifier weights {path} do not fit the network (config {cfg}): " + "; ".join(problems)
        )
    model.load_state_dict(tensors)
    model.metadata = meta
    model.weights_hash = file_hash(path)
    return model.eval().to(device)


# ---------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ClassifierTrainSettings:
    """epochs/batch_size/lr: Adam with linear warm-up then cosine decay (per step).
    weight_decay: AdamW decoupled decay. shift: random translation (pixels) as augmentation,
    0 turns it off. checkpoint_every: steps between resumable checkpoints."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    shift: int = 1
    seed: int = 0
    checkpoint_every: int = 200


def _random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Translate each image by up to ``max_shift`` px with zero fill: (n, 1, H, W) -> same."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    pad = F.pad(x[:, 0], (max_shift,) * 4)  # (n, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    rows = dy[:, None] + torch.arange(h)  # (n, H) source rows of each output row
    cols = dx[:, None] + torch.arange(w)  # (n, W)
    return pad[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]][:, None]


@torch.no_grad()
def evaluate_classifier(
    model: FashionClassifier, images: Tensor, labels: Tensor, batch: int = 1000
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on (n, 1, 32, 32) images."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(images), batch):
        logits = model(images[i : i + batch])
        y = labels[i : i + batch]
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    return {"accuracy": correct / len(images), "loss": loss / len(images)}


def _epoch_batches(settings: ClassifierTrainSettings, epoch: int, n: int, gen: torch.Generator,
                   resume_state: Tensor | None) -> Tensor:  # fmt: skip
    """The image order of ``epoch``: a permutation of ``n`` drawn from ``gen`` seeded with
    (seed, epoch). ``gen`` then draws the epoch's shifts; ``resume_state`` (a checkpoint's
    generator state in the middle of this epoch) puts it where the stopped run left it."""
    gen.manual_seed(settings.seed * 1000 + epoch)
    perm = torch.randperm(n, generator=gen)
    if resume_state is not None:
        gen.set_state(resume_state)
    return perm


def train_classifier(
    out: str | Path = DEFAULT_WEIGHTS,
    epochs: int = 4,
    batch_size: int = 128,
    seed: int = 0,
    work: str | Path = "/work/ckpt",
    data_root: str | Path | None = None,
    curve: str | Path = DEFAULT_CURVE,
    config: ClassifierConfig = ClassifierConfig(),
    settings: ClassifierTrainSettings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the classifier on the train split (resuming from ``work``/classifier.pt) and ship
    ``out`` (safetensors; metadata: config, data hash, settings, test accuracy).

    Batches come from a per-epoch permutation seeded with (seed, epoch), and the checkpoint
    holds the generator's state, so a resume mid-epoch continues with exactly the batches
    and shifts a straight run would have seen. Returns the metadata dict.
    """
    from tqdm import tqdm

    from base_models.fashion.data import data_hash, load_fashion_mnist, to_model_images

    if settings is None:
        settings = ClassifierTrainSettings(epochs=epochs, batch_size=batch_size, seed=seed)
    out, work = Path(out), Path(work)
    raw, labels = load_fashion_mnist("train", data_root)
    test_raw, test_labels = load_fashion_mnist("test", data_root)
    train_x, test_x = to_model_images(raw), to_model_images(test_raw)  # (n, 1, 32, 32) in [0, 1]

    with torch.random.fork_rng():  # weight init from the seed without touching global state afterwards
        torch.manual_seed(settings.seed)
        model = FashionClassifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = len(train_x) // settings.batch_size  # last partial batch dropped
    total = steps_per_epoch * settings.epochs
    schedule = lr_scheduler(opt, warmup_cosine(total, settings.warmup))
    gen = torch.Generator()  # re-seeded every epoch
    parts = {"model": model, "opt": opt, "scheduler": schedule, "generator": gen}
    ckpt = work / "classifier.pt"
    start, extra = load_checkpoint(ckpt, parts)
    history: list[dict] = extra.get("history", [])
    fresh_sums = {"loss": 0.0, "correct": 0, "images": 0}  # this epoch's sums so far
    sums = extra.get("epoch_sums", dict(fresh_sums))  # a mid-epoch checkpoint keeps them
    curve_csv = TrainingCurve(Path(curve), CURVE_FIELDS, "step", start)
    model.train()
    interval = 0.5 if sys.stderr.isatty() else 30.0  # keep nohup logs short
    bar = tqdm(total=total, initial=start, desc="classifier", disable=not progress, mininterval=interval)
    t0 = time.time()
    step = start
    for epoch in range(start // steps_per_epoch, settings.epochs):
        mid_epoch = step > epoch * steps_per_epoch  # only right after a resume
        perm = _epoch_batches(settings, epoch, len(train_x), gen, gen.get_state() if mid_epoch else None)
        if not mid_epoch:
            sums = dict(fresh_sums)
        for b in range(step - epoch * steps_per_epoch, steps_per_epoch):
            idx = perm[b * settings.batch_size : (b + 1) * settings.batch_size]
            x = _random_shift(train_x[idx], settings.shift, gen) if settings.shift else train_x[idx]
            y = labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer_step(loss, opt, schedule)
            step += 1
            sums["loss"] += loss.item() * len(y)
            sums["correct"] += int((logits.argmax(1) == y).sum())
            sums["images"] += len(y)
            train_loss, train_acc = sums["loss"] / sums["images"], sums["correct"] / sums["images"]
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.4f}", acc=f"{train_acc:.3f}")
            if step % settings.checkpoint_every == 0:
                save_checkpoint(ckpt, step, parts, {"history": history, "epoch_sums": sums})
        test = evaluate_classifier(model, test_x, test_labels)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": sums["loss"] / max(sums["images"], 1),
            "train_acc": sums["correct"] / max(sums["images"], 1),
            "test_loss": test["loss"],
            "test_acc": test["accuracy"],
            "elapsed_s": round(time.time() - t0, 1),
        }
        history.append(row)
        curve_csv.write(row)
        bar.write(f"epoch {epoch + 1}: test accuracy {test['accuracy']:.4f}")
        save_checkpoint(ckpt, step, parts, {"history": history, "epoch_sums": fresh_sums})
    bar.close()
    test = evaluate_classifier(model, test_x, test_labels)
    meta = {
        "kind": WEIGHTS_KIND,
        "config": config.to_dict(),
        "data_hash": data_hash(raw, labels),
        "training": asdict(settings),
        "test_accuracy": round(test["accuracy"], 5),
        "test_loss": round(test["loss"], 5),
    }
    ship_weights(out, model, meta)
    atomic_write_text(work / "classifier_eval.json", json.dumps(meta, indent=1))
    return meta


if __name__ == "__main__":  # python -m base_models.fashion.classifier (the CLI wraps train_classifier)
    torch.set_num_threads(1)
    print(json.dumps(train_classifier(), indent=1))
