"""ImageReward (Xu et al. 2023) from local files only: weights, med_config.json, BERT tokenizer.

reward(image, prompt) = (MLP(BLIP_text_encoder(prompt | cross-attending to ViT(image))[CLS])
- 0.16717362830052426) / 1.0333394966054072, with the prompt tokenised to 35 tokens (padded,
truncated). The metric ``image_reward`` reports the mean over images and keeps the per-image
values. Higher is better; the published model averages about 0 on its own test prompts.

Configuration (environment variables, read when a run builds the metric):

* ``MIGM_IMAGE_REWARD_WEIGHTS``: ``ImageReward.pt`` (THUDM/ImageReward). Required.
* ``MIGM_IMAGE_REWARD_MED_CONFIG``: BLIP's ``med_config.json`` (default: beside the weights).
* ``MIGM_IMAGE_REWARD_TOKENIZER``: a local BERT tokenizer folder with ``vocab.txt``
  (``bert-base-uncased``; default: ``bert-base-uncased/`` beside the weights).
* ``MIGM_IMAGE_REWARD_BATCH_SIZE``: images per forward (default 32).

Why not ``ImageReward.load``: its BLIP constructor calls
``BertTokenizer.from_pretrained('bert-base-uncased')`` (a hub call that fails offline with a
misleading protobuf ImportError), it loads the state dict with ``strict=False`` (a wrong file
loads silently) and it hard-codes ViT-L at 224 px. So this module assembles the same network
from the package's own classes (image-reward 1.5: ``ImageReward/models/BLIP/vit.py``
``VisionTransformer``, ``ImageReward/models/BLIP/med.py`` ``BertConfig``/``BertModel``,
``ImageReward/ImageReward.py`` ``MLP``) under the same key names (``blip.visual_encoder.*``,
``blip.text_encoder.*``, ``blip.vision_proj.*``, ``blip.text_proj.*``, ``mlp.layers.*``),
builds the tokenizer from the given folder as ``ImageReward/models/BLIP/blip.py``
``init_tokenizer`` does (plus the [DEC] bos token and the [ENC] token), reads the ViT's shape
from the file (width from ``cls_token``, depth from the block count, patch size and image size
from ``patch_embed`` and ``pos_embed``; heads = width / 64, as in BLIP's ViT-B and ViT-L) and
checks keys and shapes strictly. The scoring follows ``ImageReward.score_gard`` / ``score``.
Images are preprocessed as ``ImageReward._transform`` does (bicubic resize of the shorter side,
centre crop, CLIP mean/std), on tensors (antialiased interpolation instead of PIL).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.protocol import BaseModel, MetricInfo
from metrics.common import (
    PromptScoreMetric,
    batch_size_from_env,
    check_state_dict,
    env_path,
    first_keys,
    require_file,
    require_ready,
    to_rgb_pixels,
)

WEIGHTS_ENV = "MIGM_IMAGE_REWARD_WEIGHTS"
MED_CONFIG_ENV = "MIGM_IMAGE_REWARD_MED_CONFIG"
TOKENIZER_ENV = "MIGM_IMAGE_REWARD_TOKENIZER"
BATCH_ENV = "MIGM_IMAGE_REWARD_BATCH_SIZE"
MED_CONFIG_FILE = "med_config.json"
TOKENIZER_DIR = "bert-base-uncased"
IMAGE_REWARD_INFO = MetricInfo("image_reward", "", True, "condition", label="ImageReward")

REWARD_MEAN = 0.16717362830052426  # ImageReward.py: self.mean
REWARD_STD = 1.0333394966054072  # ImageReward.py: self.std
MAX_TEXT_TOKENS = 35  # ImageReward.score: padding="max_length", truncation=True, max_length=35
VIT_HEAD_DIM = 64  # BLIP ViT-B: 768 / 12 heads, ViT-L: 1024 / 16 heads
_VIT = "blip.visual_encoder."
# buffers the model computes itself (med.py BertEmbeddings: arange(max_position_embeddings));
# the only keys the strict check lets a file omit
DERIVED_BUFFERS = ("blip.text_encoder.embeddings.position_ids",)


def _import_blip():
    """The package's classes (imports ``ImageReward``; nothing is downloaded)."""
    try:
        from ImageReward.ImageReward import MLP
        from ImageReward.models.BLIP.med import BertConfig, BertModel
        from ImageReward.models.BLIP.vit import VisionTransformer
    except ImportError as err:
        raise ModuleNotFoundError(
            f"image_reward needs the image-reward package: pip install -e '.[t2i]'; {err}"
        ) from None
    return VisionTransformer, BertConfig, BertModel, MLP


@dataclass(frozen=True)
class ImageRewardFiles:
    """The three local inputs; med_config and tokenizer default to siblings of the weights."""

    weights: Path
    med_config: Path
    tokenizer: Path

    @classmethod
    def resolve(
        cls, weights: str | os.PathLike, med_config: str | os.PathLike | None = None,
        tokenizer: str | os.PathLike | None = None,
    ) -> ImageRewardFiles:  # fmt: skip
        weights = Path(weights).expanduser()
        return cls(
            weights,
            Path(med_config).expanduser() if med_config else weights.parent / MED_CONFIG_FILE,
            Path(tokenizer).expanduser() if tokenizer else weights.parent / TOKENIZER_DIR,
        )

    @classmethod
    def from_env(cls) -> ImageRewardFiles | None:
        weights = env_path(WEIGHTS_ENV)
        if weights is None:
            return None
        return cls.resolve(weights, env_path(MED_CONFIG_ENV), env_path(TOKENIZER_ENV))

    def missing(self) -> str | None:
        """The first missing input, with the variable that sets it; None when all exist."""
        if not self.weights.is_file():
            return f"ImageReward weights not found: {self.weights} (${WEIGHTS_ENV})"
        if not self.med_config.is_file():
            return f"ImageReward med_config.json not found: {self.med_config} (${MED_CONFIG_ENV})"
        if not (self.tokenizer / "vocab.txt").is_file():
            return (
                f"BERT tokenizer folder {self.tokenizer} has no vocab.txt (${TOKENIZER_ENV}: a local "
                f"bert-base-uncased folder)"
            )
        return None


def image_reward_unavailable() -> str | None:
    """Why ``image_reward`` cannot run here, with what fixes it; None when it can. Loads nothing."""
    files = ImageRewardFiles.from_env()
    if files is None:
        return (
            f"image_reward needs local files: set ${WEIGHTS_ENV}=/path/ImageReward.pt (med_config.json and "
            f"{TOKENIZER_DIR}/ beside it, or ${MED_CONFIG_ENV} and ${TOKENIZER_ENV})"
        )
    missing = files.missing()
    if missing:
        return f"image_reward: {missing}"
    if importlib.util.find_spec("ImageReward") is None:
        return "image_reward needs the image-reward package: pip install -e '.[t2i]'"
    return None


# ------------------------------------------------------------------------ tokenizer
def load_bert_tokenizer(folder: str | os.PathLike):
    """BLIP's tokenizer from a LOCAL folder (``blip.py`` ``init_tokenizer`` without the hub):
    BertTokenizer + bos_token [DEC] + additional special token [ENC] (``enc_token_id``)."""
    from transformers import BertTokenizer

    folder = Path(folder).expanduser()
    require_file(
        folder / "vocab.txt",
        "BERT tokenizer vocab.txt",
        f"${TOKENIZER_ENV}: a local bert-base-uncased folder",
    )
    tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
    return tokenizer


# ------------------------------------------------------------------------ network
@dataclass(frozen=True)
class VitShape:
    """The BLIP ViT's shape, read from a state dict."""

    width: int
    depth: int
    heads: int
    patch_size: int
    image_size: int
    mlp_ratio: float
    embed_dim: int  # vision_proj / text_proj output (BLIP: 256)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], path: Path) -> VitShape:
        needed = [_VIT + "cls_token", _VIT + "pos_embed", _VIT + "patch_embed.proj.weight",
                  _VIT + "blocks.0.mlp.fc1.weight", "blip.vision_proj.weight"]  # fmt: skip
        absent = [k for k in needed if k not in state]
        if absent:  # not ImageReward's layout at all
            foreign = [k for k in state if not k.startswith(("blip.", "mlp."))]
            raise ValueError(
                f"ImageReward weights {path} do not fit the model: missing keys {first_keys(absent)}"
                + (f"; unexpected keys {first_keys(foreign)}" if foreign else "")
            )
        width = state[_VIT + "cls_token"].shape[-1]
        patch = state[_VIT + "patch_embed.proj.weight"].shape[-1]
        grid = round((state[_VIT + "pos_embed"].shape[1] - 1) ** 0.5)
        depth = 1 + max(
            int(m.group(1)) for k in state if (m := re.match(re.escape(_VIT) + r"blocks\.(\d+)\.", k))
        )
        if width % VIT_HEAD_DIM:
            raise ValueError(
                f"ImageReward weights {path}: ViT width {width} is not a multiple of {VIT_HEAD_DIM}"
            )
        return cls(
            width=width,
            depth=depth,
            heads=width // VIT_HEAD_DIM,
            patch_size=patch,
            image_size=grid * patch,
            mlp_ratio=state[_VIT + "blocks.0.mlp.fc1.weight"].shape[0] / width,
            embed_dim=state["blip.vision_proj.weight"].shape[0],
        )


class _BlipParts(nn.Module):
    """The parts of ImageReward's ``BLIP_Pretrain`` its checkpoint holds (same attribute names)."""

    def __init__(self, vit: VitShape, med_config: Path) -> None:
        super().__init__()
        VisionTransformer, BertConfig, BertModel, _ = _import_blip()
        self.visual_encoder = VisionTransformer(
            img_size=vit.image_size, patch_size=vit.patch_size, embed_dim=vit.width, depth=vit.depth,
            num_heads=vit.heads, mlp_ratio=vit.mlp_ratio,
        )  # fmt: skip
        config = BertConfig.from_json_file(str(med_config))
        config.encoder_width = vit.width  # blip_pretrain.py: encoder_config.encoder_width = vision_width
        self.text_encoder = BertModel(config=config, add_pooling_layer=False)
        self.vision_proj = nn.Linear(vit.width, vit.embed_dim)
        self.text_proj = nn.Linear(config.hidden_size, vit.embed_dim)


class ImageRewardNet(nn.Module):
    """ImageReward's network (``blip`` + ``mlp``), frozen in eval mode.

    ``forward(pixels, input_ids, attention_mask)``: (n, 3, S, S) normalised pixels and (n, T)
    tokens -> (n,) normalised rewards (``ImageReward.score_gard``).
    """

    def __init__(self, vit: VitShape, med_config: Path) -> None:
        super().__init__()
        _, _, _, MLP = _import_blip()
        self.vit = vit
        self.blip = _BlipParts(vit, med_config)
        self.mlp = MLP(self.blip.text_encoder.config.hidden_size)  # ImageReward.py: MLP(768)

    def train(self, mode: bool = True) -> ImageRewardNet:
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        image_embeds = self.blip.visual_encoder(pixels)  # (n, 1 + patches, width)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=pixels.device)
        out = self.blip.text_encoder(
            input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts, return_dict=True,
        )  # fmt: skip
        features = out.last_hidden_state[:, 0, :].float()  # (n, hidden) the [CLS] row
        return ((self.mlp(features) - REWARD_MEAN) / REWARD_STD).squeeze(-1)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file: one line naming it)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"cannot read ImageReward weights {path}: {type(err).__name__}: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"ImageReward weights {path} do not hold a state dict of tensors")
    return state


class ImageRewardScorer:
    """Network + local tokenizer: ``scores(images, prompts)`` -> (n,) rewards."""

    def __init__(self, net: ImageRewardNet, tokenizer) -> None:
        self.net = net
        self.tokenizer = tokenizer

    def to(self, device: torch.device | str) -> ImageRewardScorer:
        self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        if len(prompts) != len(images):
            raise ValueError(f"image_reward: {len(prompts)} prompts for {len(images)} images")
        device = next(self.net.parameters()).device
        pixels = to_rgb_pixels(images.to(device), self.net.vit.image_size)
        text = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TEXT_TOKENS,
                              return_tensors="pt")  # fmt: skip
        return self.net(pixels, text.input_ids.to(device), text.attention_mask.to(device))


def load_image_reward(
    weights: str | os.PathLike, med_config: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> ImageRewardScorer:  # fmt: skip
    """ImageReward from local files (defaults: med_config.json and bert-base-uncased/ beside the
    weights). FileNotFoundError / ValueError (one line) name the file at fault."""
    files = ImageRewardFiles.resolve(weights, med_config, tokenizer)
    require_file(files.weights, "ImageReward weights", f"${WEIGHTS_ENV}")
    require_file(files.med_config, "ImageReward med_config.json", f"${MED_CONFIG_ENV}")
    tok = load_bert_tokenizer(files.tokenizer)
    state = _read_state_dict(files.weights)
    net = ImageRewardNet(VitShape.from_state_dict(state, files.weights), files.med_config)
    for key in DERIVED_BUFFERS:  # not learned: a file saved without it is still complete
        state.setdefault(key, net.state_dict()[key])
    check_state_dict(state, net.state_dict(), files.weights, "ImageReward weights")
    net.load_state_dict(state, strict=True)
    vocab = net.blip.text_encoder.config.vocab_size
    if len(tok) > vocab:
        raise ValueError(
            f"BERT tokenizer {files.tokenizer} has {len(tok)} tokens (with [DEC], [ENC]) but "
            f"{files.med_config} says vocab_size {vocab}"
        )
    return ImageRewardScorer(net.eval(), tok)


# ------------------------------------------------------------------------ the metric
class ImageRewardMetric(PromptScoreMetric):
    """Metric ``image_reward``: mean ImageReward over images (per-image values kept), batched."""

    info = IMAGE_REWARD_INFO
    nonfinite_message = "image_reward: non-finite rewards (NaN/inf in the images or the weights)"

    def __init__(self, scorer: ImageRewardScorer, batch_size: int = 32) -> None:
        super().__init__(scorer, batch_size)


def image_reward_metric(model: BaseModel | None = None) -> ImageRewardMetric:
    """The metric factory: from the environment (see the module docstring). MetricUnavailable
    when the files are not configured or the base model has no prompts."""
    require_ready(image_reward_unavailable(), model, IMAGE_REWARD_INFO.name)
    files = ImageRewardFiles.from_env()
    assert files is not None  # checked by image_reward_unavailable
    return ImageRewardMetric(load_image_reward(files.weights, files.med_config, files.tokenizer),
                             batch_size_from_env(BATCH_ENV, 32))  # fmt: skip
