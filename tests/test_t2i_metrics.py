"""Text-to-image metrics: clip_score (open_clip) and image_reward (ImageReward) from local files.

Tiny models are built here from the packages' own classes (open_clip ``CLIP``; ImageReward's
``VisionTransformer``, ``BertModel``, ``MLP``) at tiny sizes, saved, and loaded back by path
through our loaders, with sockets disabled (no network call anywhere). The tests that need
open_clip / image-reward skip cleanly without them (CI installs the ``t2i`` extra); the
availability listing, start-up failure and prompt plumbing need neither.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.hookspecs import hookimpl
from bench.protocol import GeneratedBatch, condition_prompts
from bench.runner import Sweep, SweepError, run_sweep
from bench.specs import BaseModelSpec, MetricContext, MetricUnavailable, MetricValue
from metrics import plugin as t2i_plugin
from metrics.common import to_rgb_pixels
from metrics.prompts import prompts_hash

PROMPTS = ["a red square", "a blue circle", "a cat on a mat"]
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
T2I_ENV = ("MIGM_CLIP_WEIGHTS", "MIGM_CLIP_MODEL", "MIGM_CLIP_BATCH_SIZE", "MIGM_IMAGE_REWARD_WEIGHTS",
           "MIGM_IMAGE_REWARD_MED_CONFIG", "MIGM_IMAGE_REWARD_TOKENIZER", "MIGM_IMAGE_REWARD_BATCH_SIZE")  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in T2I_ENV:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def offline(monkeypatch):
    """Any socket connection fails the test (the loaders must read local files only)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def images(n: int = 3, channels: int = 3, size: int = 40) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def batch(n: int = 3, prompts: list[str] | None = PROMPTS) -> GeneratedBatch:
    return GeneratedBatch(images=images(n), tokens=torch.zeros(n, 4, dtype=torch.long),
                          cond=torch.arange(n), prompts=prompts)  # fmt: skip


def ctx() -> MetricContext:
    return MetricContext(model=None, device=torch.device("cpu"))


class FakeT2IModel:
    name = "fake-t2i"

    def condition_prompts(self, cond):
        return [PROMPTS[int(c) % len(PROMPTS)] for c in cond]


class ClassModel:
    name = "class-conditional"


# ------------------------------------------------------------------ no optional packages needed
def test_unavailable_metrics_are_listed_with_reason_and_fix(default_manager, capsys):
    default_manager.register(t2i_plugin)
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    clip = next(line for line in out.splitlines() if line.strip().startswith("clip_score"))
    reward = next(line for line in out.splitlines() if line.strip().startswith("image_reward"))
    assert "UNAVAILABLE" in clip and "$MIGM_CLIP_WEIGHTS" in clip
    assert "UNAVAILABLE" in reward and "$MIGM_IMAGE_REWARD_WEIGHTS" in reward and "med_config.json" in reward
    specs = default_manager.metrics()
    assert not specs["clip_score"].default and not specs["image_reward"].default  # opt-in


def test_missing_files_are_named_in_the_reason(default_manager, monkeypatch, tmp_path):
    default_manager.register(t2i_plugin)
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(tmp_path / "clip.safetensors"))
    assert (
        f"CLIP weights not found: {tmp_path / 'clip.safetensors'}"
        in default_manager.metrics()["clip_score"].unavailable()
    )
    (tmp_path / "ImageReward.pt").write_bytes(b"")
    monkeypatch.setenv("MIGM_IMAGE_REWARD_WEIGHTS", str(tmp_path / "ImageReward.pt"))
    reason = default_manager.metrics()["image_reward"].unavailable()
    assert f"med_config.json not found: {tmp_path / 'med_config.json'}" in reason
    assert "$MIGM_IMAGE_REWARD_MED_CONFIG" in reason


def test_a_run_asking_for_an_unavailable_metric_fails_at_start_up(manager, tmp_path, capsys):
    manager.register(t2i_plugin)
    sweep = Sweep(model="maskgit:config=tiny", images=2, batch_size=2, metrics=["clip_score"],
                  out=str(tmp_path), name="run", device="cpu")  # fmt: skip
    with pytest.raises(SweepError, match=r"metric 'clip_score' is unavailable: .*\$MIGM_CLIP_WEIGHTS"):
        run_sweep(sweep, manager=manager, progress=False)
    assert not (tmp_path / "run").exists()  # nothing generated, nothing written


def test_prompts_reach_the_batch_only_from_text_to_image_models():
    assert condition_prompts(ClassModel(), torch.arange(2)) is None
    assert condition_prompts(FakeT2IModel(), torch.tensor([0, 2])) == [PROMPTS[0], PROMPTS[2]]
    old_style = GeneratedBatch(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4), torch.zeros(1), None, {})
    assert old_style.prompts is None  # positional construction of the old fields still works


def test_metric_value_is_a_float_with_per_image_values():
    value = MetricValue(0.5, torch.tensor([0.25, 0.75]))
    assert value == 0.5 and float(value) == 0.5 and value.per_image.dtype == torch.float64
    assert value.per_image.tolist() == [0.25, 0.75]


# ------------------------------------------------------------------ clip_score (open_clip)
@pytest.fixture
def tiny_clip(tmp_path):
    """A tiny open_clip CLIP (its own CLIP class), config JSON + safetensors weights on disk."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = open_clip.CLIP(**TINY_CLIP)
    weights = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    return config, weights, net


def test_clip_score_from_local_files_is_finite_deterministic_and_batched(tiny_clip, offline):
    from metrics.clip_score import ClipScore, load_open_clip

    config, weights, net = tiny_clip
    metric = ClipScore(load_open_clip(str(config), weights), batch_size=2)
    value = metric.compute(batch(), ctx())
    assert isinstance(value, MetricValue) and value.per_image.shape == (3,)
    assert (
        torch.isfinite(value.per_image).all()
        and (value.per_image >= 0).all()
        and (value.per_image <= 100).all()
    )
    assert float(value) == pytest.approx(float(value.per_image.mean()))
    again = ClipScore(load_open_clip(str(config), weights), batch_size=3).compute(batch(), ctx())
    assert torch.allclose(again.per_image, value.per_image, atol=1e-5)  # reload + other batching: same
    # the definition: max(100 * cos(image, text), 0) with open_clip's own encoders
    tokenizer = __import__("open_clip").SimpleTokenizer(context_length=16)
    with torch.no_grad():
        img = nn.functional.normalize(net.eval().encode_image(to_rgb_pixels(images(), 32)), dim=-1)
        txt = nn.functional.normalize(net.encode_text(tokenizer(PROMPTS)), dim=-1)
    assert torch.allclose(value.per_image, (100 * (img * txt).sum(-1)).clamp(min=0).double(), atol=1e-4)


def test_clip_score_metric_from_the_environment(tiny_clip, offline, monkeypatch):
    from metrics.clip_score import clip_score_metric

    config, weights, _ = tiny_clip
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(weights))
    monkeypatch.setenv("MIGM_CLIP_MODEL", str(config))
    monkeypatch.setenv("MIGM_CLIP_BATCH_SIZE", "2")
    metric = clip_score_metric(FakeT2IModel())
    assert metric.batch_size == 2 and torch.isfinite(torch.tensor(float(metric.compute(batch(), ctx()))))
    with pytest.raises(MetricUnavailable, match="text-to-image base model"):
        clip_score_metric(ClassModel())
    with pytest.raises(ValueError, match=r"needs the prompt of every image \(GeneratedBatch.prompts\)"):
        metric.compute(batch(prompts=None), ctx())
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        metric.compute(batch(prompts=PROMPTS[:2]), ctx())
    monkeypatch.setenv("MIGM_CLIP_BATCH_SIZE", "zero")
    with pytest.raises(ValueError, match=r"\$MIGM_CLIP_BATCH_SIZE must be an integer"):
        clip_score_metric(FakeT2IModel())


def test_clip_weights_are_checked_strictly(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    from metrics.clip_score import load_open_clip

    config, _, net = tiny_clip
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state.pop("logit_scale")
    state["visual.extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(ValueError) as info:
        load_open_clip(str(config), bad)
    msg = str(info.value)
    assert (
        str(bad) in msg and "missing keys logit_scale" in msg and "unexpected keys visual.extra.weight" in msg
    )
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["text_projection"] = torch.zeros(32, 8)
    save_file(state, str(bad))
    with pytest.raises(
        ValueError, match=r"text_projection has shape \(32, 8\) in the file, \(32, 16\) in the model"
    ):
        load_open_clip(str(config), bad)
    with pytest.raises(
        FileNotFoundError, match=r"CLIP weights not found: .*absent.safetensors \(\$MIGM_CLIP_WEIGHTS\)"
    ):
        load_open_clip(str(config), tmp_path / "absent.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read CLIP weights .*junk.bin"):
        load_open_clip(str(config), tmp_path / "junk.bin")


def test_clip_model_names_are_checked():
    pytest.importorskip("open_clip")
    from metrics.clip_score import clip_model_config

    cfg, label = clip_model_config("ViT-L-14-quickgelu")
    assert cfg["quick_gelu"] is True and label == "ViT-L-14-quickgelu"
    with pytest.raises(
        ValueError, match="unknown open_clip model 'ViT-L-14-quikgelu'. Did you mean: ViT-L-14-quickgelu"
    ):
        clip_model_config("ViT-L-14-quikgelu")
    with pytest.raises(ValueError, match="hub model"):
        clip_model_config("hf-hub:someone/some-clip")
    with pytest.raises(ValueError, match="Hugging Face text tower"):
        clip_model_config("xlm-roberta-base-ViT-B-32")


# ------------------------------------------------------------------ image_reward (ImageReward)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "square", "circle", "cat", "on",
         "mat", "photo", "of"]  # fmt: skip
TINY_MED = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
    "model_type": "bert",
    "num_attention_heads": 2,
    "num_hidden_layers": 1,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": len(VOCAB) + 2,
    "encoder_width": 64,
    "add_cross_attention": True,
}  # fmt: skip  (BLIP's med_config.json keys)


class _Blip(nn.Module):
    pass


class _TinyImageReward(nn.Module):
    """ImageReward's module tree (blip.{visual_encoder, text_encoder, vision_proj, text_proj}, mlp)
    built here from the package's classes at tiny sizes."""

    def __init__(self, med_config: Path) -> None:
        super().__init__()
        from ImageReward.ImageReward import MLP
        from ImageReward.models.BLIP.med import BertConfig, BertModel
        from ImageReward.models.BLIP.vit import VisionTransformer

        self.blip = _Blip()
        self.blip.visual_encoder = VisionTransformer(
            img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=1
        )
        config = BertConfig.from_json_file(str(med_config))
        config.encoder_width = 64
        self.blip.text_encoder = BertModel(config=config, add_pooling_layer=False)
        self.blip.vision_proj = nn.Linear(64, 16)
        self.blip.text_proj = nn.Linear(32, 16)
        self.mlp = MLP(32)


@pytest.fixture
def tiny_reward(tmp_path):
    """ImageReward.pt + med_config.json + bert-base-uncased/vocab.txt (a tiny vocabulary), laid
    out as the defaults expect (siblings of the weights)."""
    pytest.importorskip("ImageReward")
    folder = tmp_path / "imagereward"
    (folder / "bert-base-uncased").mkdir(parents=True)
    (folder / "bert-base-uncased" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "med_config.json").write_text(json.dumps(TINY_MED))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = _TinyImageReward(folder / "med_config.json").eval()
        for p in net.mlp.parameters():  # the package's init gives a near-constant head; spread it
            nn.init.normal_(p, std=0.5)
    torch.save(net.state_dict(), folder / "ImageReward.pt")
    return folder, net


def test_image_reward_from_local_files_matches_the_reference_scoring(tiny_reward, offline):
    from ImageReward.ImageReward import ImageReward as Reference

    from metrics.image_reward import ImageRewardMetric, load_image_reward

    folder, net = tiny_reward
    scorer = load_image_reward(folder / "ImageReward.pt")  # med_config and tokenizer beside it
    assert scorer.net.vit.image_size == 32 and scorer.net.vit.heads == 1 and scorer.net.vit.depth == 1
    assert scorer.tokenizer.enc_token_id == len(VOCAB) + 1  # [DEC] then [ENC] added, as BLIP's init_tokenizer
    metric = ImageRewardMetric(scorer, batch_size=2)
    value = metric.compute(batch(), ctx())
    assert value.per_image.shape == (3,) and torch.isfinite(value.per_image).all()
    assert value.per_image.std() > 0  # depends on the prompt/image
    again = ImageRewardMetric(load_image_reward(folder / "ImageReward.pt"), batch_size=3).compute(
        batch(), ctx()
    )
    assert torch.allclose(again.per_image, value.per_image, atol=1e-5)

    # the package's own scoring code (ImageReward.score_gard) on the network saved above
    ref = Reference.__new__(Reference)
    nn.Module.__init__(ref)
    ref.blip, ref.mlp, ref.device = net.blip, net.mlp, "cpu"
    ref.mean, ref.std = 0.16717362830052426, 1.0333394966054072
    text = scorer.tokenizer(
        PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    with torch.no_grad():
        expected = ref.score_gard(text.input_ids, text.attention_mask, to_rgb_pixels(images(), 32)).squeeze(
            -1
        )
    assert torch.allclose(value.per_image, expected.double(), atol=1e-5)


def test_image_reward_metric_from_the_environment(tiny_reward, offline, monkeypatch, tmp_path):
    from metrics.image_reward import image_reward_metric, image_reward_unavailable

    folder, _ = tiny_reward
    elsewhere = tmp_path / "tok"
    (folder / "bert-base-uncased").rename(elsewhere)
    monkeypatch.setenv("MIGM_IMAGE_REWARD_WEIGHTS", str(folder / "ImageReward.pt"))
    assert (
        "has no vocab.txt" in image_reward_unavailable()
        and "$MIGM_IMAGE_REWARD_TOKENIZER" in image_reward_unavailable()
    )
    monkeypatch.setenv("MIGM_IMAGE_REWARD_TOKENIZER", str(elsewhere))
    assert image_reward_unavailable() is None
    metric = image_reward_metric(FakeT2IModel())
    assert torch.isfinite(metric.compute(batch(), ctx()).per_image).all()
    with pytest.raises(MetricUnavailable, match="text-to-image base model"):
        image_reward_metric(ClassModel())
    with pytest.raises(ValueError, match="image_reward needs the prompt of every image"):
        metric.compute(batch(prompts=None), ctx())


def test_image_reward_weights_are_checked_strictly(tiny_reward, tmp_path):
    from metrics.image_reward import load_image_reward

    folder, net = tiny_reward
    state = net.state_dict()
    bad = folder / "bad.pt"
    torch.save(
        {k: v for k, v in state.items() if k != "mlp.layers.0.weight"} | {"blip.extra": torch.zeros(1)}, bad
    )
    with pytest.raises(ValueError) as info:
        load_image_reward(bad)
    msg = str(info.value)
    assert (
        str(bad) in msg and "missing keys mlp.layers.0.weight" in msg and "unexpected keys blip.extra" in msg
    )
    derived = "blip.text_encoder.embeddings.position_ids"  # a computed buffer may be left out
    torch.save({k: v for k, v in state.items() if k != derived}, bad)
    assert load_image_reward(bad, folder / "med_config.json", folder / "bert-base-uncased").net is not None
    torch.save({"visual.proj": torch.zeros(2)}, bad)  # e.g. a CLIP checkpoint
    with pytest.raises(
        ValueError,
        match=r"bad.pt do not fit the model: missing keys blip.visual_encoder.cls_token.*; unexpected keys visual.proj$",
    ):
        load_image_reward(bad)
    with pytest.raises(FileNotFoundError, match=r"ImageReward weights not found: .*nope.pt"):
        load_image_reward(folder / "nope.pt")
    with pytest.raises(FileNotFoundError, match=r"med_config.json not found: .*other.json"):
        load_image_reward(folder / "ImageReward.pt", med_config=folder / "other.json")
    with pytest.raises(
        FileNotFoundError, match=r"vocab.txt not found: .*missing/vocab.txt \(\$MIGM_IMAGE_REWARD_TOKENIZER"
    ):
        load_image_reward(folder / "ImageReward.pt", tokenizer=tmp_path / "missing")


def test_the_published_layout_reads_as_vit_large_224():
    """ImageReward hard-codes BLIP's ViT-L/16 at 224 px (blip.py ``create_vit('large')``); its
    checkpoint's key shapes (meta tensors, nothing allocated) must read back as exactly that."""
    from metrics.image_reward import VitShape

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    vit = "blip.visual_encoder."
    state = {vit + "cls_token": meta(1, 1, 1024), vit + "pos_embed": meta(1, 14 * 14 + 1, 1024),
             vit + "patch_embed.proj.weight": meta(1024, 3, 16, 16), "blip.vision_proj.weight": meta(256, 1024)}  # fmt: skip
    for i in range(24):
        state[f"{vit}blocks.{i}.mlp.fc1.weight"] = meta(4096, 1024)
    shape = VitShape.from_state_dict(state, Path("ImageReward.pt"))
    assert (shape.width, shape.depth, shape.heads, shape.patch_size, shape.image_size, shape.mlp_ratio,
            shape.embed_dim) == (1024, 24, 16, 16, 224, 4.0, 256)  # fmt: skip


class _TinyT2IPlugin:
    """A stand-in text-to-image base model: the tiny MaskGIT whose class c is 'prompt c'."""

    @staticmethod
    @hookimpl
    def register_base_models(register):
        from base_models.maskgit.plugin import MaskGITPluginConfig, build_maskgit

        def build(config, device):
            model = build_maskgit(config, device)
            model.condition_prompts = lambda cond: [PROMPTS[int(c) % len(PROMPTS)] for c in cond]
            model.prompt_record = lambda: {"spec": "test-prompts"}
            return model

        register(BaseModelSpec(name="tiny-t2i", config_cls=MaskGITPluginConfig, factory=build))


def test_a_run_reports_clip_score_with_per_image_rows(manager, tiny_clip, monkeypatch, tmp_path):
    import pandas as pd

    config, weights, _ = tiny_clip
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(weights))
    monkeypatch.setenv("MIGM_CLIP_MODEL", str(config))
    manager.register(t2i_plugin)
    manager.register(_TinyT2IPlugin)
    sweep = Sweep(model="tiny-t2i", accelerators=["few-step:steps=3"], images=3, batch_size=2,
                  metrics=["clip_score"], replicates=1, warmup=0, out=str(tmp_path), name="run", device="cpu")  # fmt: skip
    run_dir = run_sweep(sweep, manager=manager, progress=False)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary.status == "ok").all() and summary.clip_score.between(0, 100).all()
    rows = pd.read_csv(run_dir / "measurements.csv")
    per = rows[(rows.metric == "clip_score_per_image") & (rows.accelerator == "vanilla")]
    assert list(per.replicate) == [0, 1, 2] and list(per.seed) == [0, 0, 1]  # batches of 2: seeds 0, 0, 1
    assert per.value.mean() == pytest.approx(
        float(summary.loc[summary.accelerator == "vanilla", "clip_score"].iloc[0])
    )
    assert set(per.reference) == {"condition"} and per.higher_is_better.all()
    # run.json records which prompts were used: the model's record and a hash of the prompts in order
    info = json.loads((run_dir / "run.json").read_text())
    model = manager.make_base_model("tiny-t2i")
    used = model.condition_prompts(
        model.conditions(3, torch.Generator().manual_seed(0))
    )  # the run's conditions
    assert info["prompts"] == {
        "count": 3,
        "distinct": len(set(used)),
        "sha256": prompts_hash(used),
        "selection": {"spec": "test-prompts"},
    }
