"""CLIPScore with open_clip from a local weights file (no hub access).

CLIPScore(image, prompt) = max(100 * cos(E_image(image), E_text(prompt)), 0) (Hessel et al.
2021, "CLIPScore"; the definition of torchmetrics ``multimodal/clip_score.py``:
``100 * (img_features * txt_features).sum(-1)`` on normalised features, clamped at 0). The
metric ``clip_score`` reports the mean over images and keeps the per-image values.

Configuration (environment variables, read when a run builds the metric):

* ``MIGM_CLIP_WEIGHTS``: the local weights file (``.safetensors``, ``.bin``, ``.pt``: a state
  dict, optionally under "state_dict", as open_clip saves them). Required, unless the base model
  brings its own CLIP (optional method ``clip_weights() -> (model, weights)``, see
  ``bench.protocol.BaseModel``; ``fashion-t2i``: the CLIP trained on its captions), which is
  used when the variable is not set.
* ``MIGM_CLIP_MODEL``: an open_clip model name (``open_clip.list_models()``), or the path of
  a model-config JSON in open_clip's layout (embed_dim, vision_cfg, text_cfg, quick_gelu).
  Default ``ViT-L-14-quickgelu``: OpenAI's ViT-L/14, the model torchmetrics' CLIPScore uses.
  OpenAI weights need a ``-quickgelu`` name (loading them by path does not switch QuickGELU
  on); LAION weights use the plain name.
* ``MIGM_CLIP_BATCH_SIZE``: images per forward (default 64).

Facts from open_clip 2.32 (mlfoundations/open_clip): ``src/open_clip/factory.py``
(``load_state_dict``: safetensors or torch file, "state_dict" wrapper, "module." prefix;
``load_checkpoint``: old text-tower layout, logit_scale shape), ``model.py`` (``CLIP``,
``CustomTextCLIP`` constructors, ``encode_image`` / ``encode_text``), ``tokenizer.py``
(``SimpleTokenizer``, BPE vocabulary shipped in the package), ``transform.py`` (eval
transform: resize the shorter side bicubic, centre crop, OpenAI mean/std). Unlike open_clip's
loader, ours never resizes position embeddings and checks keys and shapes strictly.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.config import suggest
from bench.protocol import BaseModel, MetricInfo
from bench.specs import MetricUnavailable
from metrics.common import (
    CLIP_MEAN,
    CLIP_STD,
    PromptScoreMetric,
    batch_size_from_env,
    check_state_dict,
    env_path,
    require_file,
    require_ready,
    to_rgb_pixels,
)

CLIP_WEIGHTS_ENV = "MIGM_CLIP_WEIGHTS"
CLIP_MODEL_ENV = "MIGM_CLIP_MODEL"
CLIP_BATCH_ENV = "MIGM_CLIP_BATCH_SIZE"
DEFAULT_CLIP_MODEL = "ViT-L-14-quickgelu"
CLIP_SCORE_INFO = MetricInfo("clip_score", "", True, "condition", label="CLIPScore")
_CTOR_KEYS = ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
              "nonscalar_logit_scale")  # fmt: skip
_IGNORED_KEYS = ("custom_text", "preprocess_cfg")


def _import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ModuleNotFoundError(
            f"clip_score needs open_clip: pip install -e '.[t2i]' (open_clip_torch==2.32.0); {err}"
        ) from None
    return open_clip


@dataclass(frozen=True)
class ClipScoreConfig:
    """model: open_clip model name or model-config JSON path; weights: local weights file;
    batch_size: images per forward."""

    weights: str
    model: str = DEFAULT_CLIP_MODEL
    batch_size: int = 64

    @classmethod
    def from_env(cls, model: BaseModel | None = None) -> ClipScoreConfig:
        """$MIGM_CLIP_WEIGHTS and $MIGM_CLIP_MODEL, else the base model's own CLIP."""
        weights = env_path(CLIP_WEIGHTS_ENV)
        own = model_clip(model) if weights is None else None
        if weights is None and own is None:
            raise MetricUnavailable(clip_score_unavailable() or f"${CLIP_WEIGHTS_ENV} is not set")
        batch = batch_size_from_env(CLIP_BATCH_ENV, 64)
        if own is not None:
            return cls(weights=own[1], model=own[0], batch_size=batch)
        name = os.environ.get(CLIP_MODEL_ENV, "").strip() or DEFAULT_CLIP_MODEL
        return cls(weights=str(weights), model=name, batch_size=batch)


def model_clip(model: BaseModel | None) -> tuple[str, str] | None:
    """(open_clip model name or config JSON, weights file) of the base model's own CLIP (its
    optional ``clip_weights()``), or None."""
    fn = getattr(model, "clip_weights", None)
    if fn is None:
        return None
    config, weights = fn()
    return str(config), str(weights)


def clip_score_unavailable(model: BaseModel | None = None) -> str | None:
    """Why ``clip_score`` cannot run here (no weights path, file missing, open_clip not
    installed), with what fixes it; None when it can. Cheap: loads nothing. ``model``: the
    built base model, whose own CLIP counts when $MIGM_CLIP_WEIGHTS is not set."""
    weights = env_path(CLIP_WEIGHTS_ENV)
    own = model_clip(model) if weights is None else None
    if weights is None and own is None:
        return (
            f"clip_score needs local CLIP weights: set ${CLIP_WEIGHTS_ENV}=/path/to/weights.safetensors "
            f"(and ${CLIP_MODEL_ENV}, default {DEFAULT_CLIP_MODEL})"
        )
    if own is not None:
        config, path = own
        files = [path, config] if config.endswith(".json") else [path]  # a config JSON or a registered name
        missing = next((f for f in files if not Path(f).is_file()), None)
        if missing:
            return f"clip_score: the CLIP of base model {model.name!r} is missing: {missing}"
    elif not weights.is_file():
        return f"clip_score: CLIP weights not found: {weights} (${CLIP_WEIGHTS_ENV})"
    if importlib.util.find_spec("open_clip") is None:
        return "clip_score needs open_clip: pip install -e '.[t2i]'"
    return None


# ------------------------------------------------------------------------ the model
def clip_model_config(model: str) -> tuple[dict, str]:
    """(open_clip model config dict, a label) of a registered model name or a config JSON path.
    Refuses configs that would reach the hub (Hugging Face text towers or tokenizers)."""
    open_clip = _import_open_clip()
    if model.startswith("hf-hub:"):
        raise ValueError(
            f"clip model {model!r} is a hub model; give a registered name or a local config JSON"
        )
    if model.endswith(".json") or os.sep in model:
        path = Path(model).expanduser()
        require_file(path, "open_clip model config", f"${CLIP_MODEL_ENV}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"open_clip model config {path} is not valid JSON: {err}") from None
        label = str(path)
    else:
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(f"unknown open_clip model {model!r}.{suggest(model, open_clip.list_models())}")
        label = model
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise ValueError(f"open_clip model config {label} needs embed_dim, vision_cfg and text_cfg")
    unknown = sorted(set(cfg) - set(_CTOR_KEYS) - set(_IGNORED_KEYS))
    if unknown:
        raise ValueError(
            f"open_clip model config {label}: unsupported keys {', '.join(unknown)} (not a plain CLIP)"
        )
    text = cfg["text_cfg"]
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        raise ValueError(
            f"open_clip model {label} uses a Hugging Face text tower/tokenizer, which needs the hub; "
            "choose a model with open_clip's own text transformer"
        )
    return cfg, label


def _read_clip_state_dict(open_clip, path: Path, model: nn.Module) -> dict[str, Tensor]:
    """open_clip's file reading and layout fixes (factory.py ``load_state_dict`` and the first
    part of ``load_checkpoint``), without position-embedding resizing."""
    from open_clip.model import convert_to_custom_text_state_dict

    try:
        state = open_clip.factory.load_state_dict(str(path))
    except Exception as err:  # noqa: BLE001 (any unreadable file: one line naming it)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"cannot read CLIP weights {path}: {type(err).__name__}: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"CLIP weights {path} do not hold a state dict of tensors")
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in state and own is not None and own.ndim != state[name].ndim:
            state[name] = state[name].reshape(own.shape)
    return state


class OpenClipScorer(nn.Module):
    """An open_clip CLIP, its tokenizer and eval preprocessing, frozen in eval mode.

    ``forward(images, prompts)``: (n, C, H, W) in [0, 1] and n prompts -> (n,) CLIPScores.
    """

    def __init__(self, model: nn.Module, tokenizer, image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def train(self, mode: bool = True) -> OpenClipScorer:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor, prompts: list[str]) -> Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"clip_score: {len(prompts)} prompts for {len(images)} images")
        device = next(self.model.parameters()).device
        pixels = to_rgb_pixels(images.to(device), self.image_size, self.mean, self.std)
        tokens = self.tokenizer(list(prompts)).to(device)  # (n, context_length)
        img = nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)  # (n, E)
        txt = nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)  # (n, E)
        return (100.0 * (img * txt).sum(-1)).clamp(min=0.0)


def load_open_clip(model: str, weights: str | os.PathLike) -> OpenClipScorer:
    """Build open_clip ``model`` (name or config JSON, random init, nothing downloaded) and load
    ``weights`` strictly. FileNotFoundError / ValueError (one line) name the file."""
    open_clip = _import_open_clip()
    path = require_file(Path(weights).expanduser(), "CLIP weights", f"${CLIP_WEIGHTS_ENV}")
    cfg, label = clip_model_config(model)
    cls = open_clip.CustomTextCLIP if cfg.get("custom_text") else open_clip.CLIP
    net = cls(**{k: cfg[k] for k in _CTOR_KEYS if k in cfg})
    state = _read_clip_state_dict(open_clip, path, net)
    check_state_dict(state, net.state_dict(), path, f"CLIP weights (model {label})")
    net.load_state_dict(state, strict=True)
    text = cfg["text_cfg"]
    tokenizer = open_clip.SimpleTokenizer(
        context_length=text.get("context_length", 77), **text.get("tokenizer_kwargs", {})
    )
    size = cfg["vision_cfg"].get("image_size", 224)
    size = size if isinstance(size, int) else min(size)
    pre = cfg.get("preprocess_cfg", {})
    return OpenClipScorer(net, tokenizer, size, pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD))


# ------------------------------------------------------------------------ the metric
class ClipScore(PromptScoreMetric):
    """Metric ``clip_score``: mean CLIPScore over images (per-image values kept), batched."""

    info = CLIP_SCORE_INFO
    nonfinite_message = "clip_score: non-finite scores (NaN/inf in the images or the CLIP weights)"

    def __init__(self, scorer: OpenClipScorer, batch_size: int = 64) -> None:
        super().__init__(scorer, batch_size)


def clip_score_metric(model: BaseModel | None = None) -> ClipScore:
    """The metric factory: from the environment, else the base model's own CLIP (see the module
    docstring). MetricUnavailable when no weights are configured or the model has no prompts."""
    require_ready(clip_score_unavailable(model), model, CLIP_SCORE_INFO.name)
    config = ClipScoreConfig.from_env(model)
    return ClipScore(load_open_clip(config.model, config.weights), config.batch_size)
