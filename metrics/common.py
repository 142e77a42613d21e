"""Shared by the text-to-image metrics: prompts of a batch, image preprocessing, file checks."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from bench.protocol import BaseModel, GeneratedBatch, MetricInfo
from bench.specs import MetricContext, MetricUnavailable, MetricValue

# CLIP's normalisation (openai/CLIP clip.py `_transform`; open_clip constants.py OPENAI_DATASET_MEAN/STD);
# ImageReward's `_transform` uses the same numbers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def require_text_to_image(model: BaseModel, metric: str) -> None:
    """MetricUnavailable unless ``model`` can name the prompt of each condition
    (``condition_prompts(cond)``, see ``bench.protocol.condition_prompts``)."""
    if getattr(model, "condition_prompts", None) is None:
        raise MetricUnavailable(
            f"{metric} needs a text-to-image base model (one with condition_prompts); base model "
            f"{getattr(model, 'name', type(model).__name__)!r} is class-conditional"
        )


def require_ready(unavailable: str | None, model: BaseModel | None, metric: str) -> None:
    """A metric factory's refusals, in one line (MetricUnavailable): ``unavailable`` is why its
    files are not configured (None: they are); ``model``, when given, must have prompts."""
    if unavailable:
        raise MetricUnavailable(unavailable)
    if model is not None:
        require_text_to_image(model, metric)


def batch_prompts(generated: GeneratedBatch, metric: str) -> list[str]:
    """The prompt of every image of ``generated``; ValueError when there are none or too few."""
    prompts = generated.prompts
    n = len(generated.images)
    if prompts is None:
        raise ValueError(
            f"{metric} needs the prompt of every image (GeneratedBatch.prompts) and got none: "
            "it only scores text-to-image models"
        )
    if len(prompts) != n:
        raise ValueError(f"{metric}: {len(prompts)} prompts for {n} images (one prompt per image needed)")
    return [str(p) for p in prompts]


def to_rgb_pixels(images: Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> Tensor:
    """(n, C, H, W) in [0, 1] (C = 1 or 3) -> (n, 3, size, size) normalised network input.

    The tensor version of CLIP's / ImageReward's PIL transform: resize the shorter side to
    ``size`` (bicubic, antialiased like PIL), centre crop, normalise with ``mean``/``std``.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (n, 1 or 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True,
                                            align_corners=False)  # fmt: skip
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size].clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def env_path(var: str) -> Path | None:
    """``$var`` as a Path (None when unset or empty)."""
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def require_file(path: Path, what: str, fix: str) -> Path:
    """``path`` if it is a file, else FileNotFoundError naming it and what fixes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} ({fix})")
    return path


def first_keys(keys: list[str], n: int = 3) -> str:
    """'a, b, c (+2 more)': the first ``n`` keys of a list for a one-line error."""
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_state_dict(
    found: dict[str, Tensor], expected: dict[str, Tensor], path: Path | str, what: str
) -> None:
    """Our strict load check: the file's keys must be exactly the model's, with the same
    shapes. Raises ValueError (one line) naming the file and the first missing, unexpected or
    mis-shaped keys, so a wrong file never loads silently."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {first_keys(missing)}"] if missing else []) + (
            [f"unexpected keys {first_keys(unexpected)}"] if unexpected else []
        )
        raise ValueError(f"{what} {path} do not fit the model: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{what} {path} do not fit the model: {key} has shape {tuple(found[key].shape)} in the file, "
                f"{tuple(tensor.shape)} in the model"
            )


def batch_size_from_env(var: str, default: int) -> int:
    """Images per forward from ``$var`` (unset or blank = ``default``); ValueError (one line)
    when it is not an integer >= 1."""
    raw = os.environ.get(var, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"${var} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"${var} must be >= 1, got {value}")
    return value


class PromptScoreMetric:
    """A metric that scores every (image, prompt) pair with ``scorer`` and reports the mean,
    keeping the per-image values. Subclasses set ``info`` and ``nonfinite_message``.

    ``scorer(images, prompts)``: (b, C, H, W) in [0, 1] and b prompts -> (b,) scores; it has
    ``to(device)`` (an ``nn.Module`` or anything with that method).
    """

    info: MetricInfo
    nonfinite_message: str

    def __init__(self, scorer, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"{self.info.name} batch size must be >= 1, got {batch_size}")
        self.scorer = scorer
        self.batch_size = batch_size

    def scores(self, images: Tensor, prompts: list[str], device: torch.device | str = "cpu") -> Tensor:
        """(n,) scores (float64, CPU), ``batch_size`` images at a time on ``device``."""
        self.scorer.to(device)
        out = [
            self.scorer(images[i : i + self.batch_size], prompts[i : i + self.batch_size]).double().cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def compute(self, generated: GeneratedBatch, ctx: MetricContext) -> MetricValue:
        prompts = batch_prompts(generated, self.info.name)
        per_image = self.scores(generated.images, prompts, ctx.device)
        if not torch.isfinite(per_image).all():
            raise ValueError(self.nonfinite_message)
        return MetricValue(float(per_image.mean()), per_image)
