"""The ``maskgit`` / ``fashion`` specs (issue 9, items 4 and 5): a given checkpoint is loaded or
refused, ``config=auto`` reads a v1 checkpoint's shapes from the file, and every sampling
setting is a spec option with the references' values as defaults."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from base_models.fashion.plugin import FASHION_SAMPLING, FashionConfig
from base_models.maskgit.checkpoint import CheckpointError
from base_models.maskgit.plugin import IMAGENET_SAMPLING, MaskGITPluginConfig, build_maskgit
from base_models.maskgit.testing import TINY_SAMPLING, TINY_TRANSFORMER, tiny_maskgit
from base_models.maskgit.transformer import MaskTransformer, TransformerConfig
from bench.config import UnknownNameError, build_config
from bench.protocol import SamplingSettings
from bench.sampling_options import apply_sampling_options


def build(**options):
    return build_maskgit(build_config(MaskGITPluginConfig, options, owner="maskgit"), torch.device("cpu"))


def save_pth(path, transformer: MaskTransformer, prefix: str = "") -> str:
    """The MaskGIT-pytorch layout: ``torch.save({'iter', 'global_epoch', 'model_state_dict', ...})``."""
    state = {prefix + k: v for k, v in transformer.state_dict().items()}
    torch.save({"iter": 1, "global_epoch": 0, "model_state_dict": state, "optimizer_state_dict": {}}, path)
    return str(path)


def same_weights(a: MaskTransformer, b: MaskTransformer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------- item 4: loading
def test_tiny_with_a_checkpoint_loads_the_file(tmp_path):
    trained = tiny_maskgit(7, with_vqgan=False).transformer  # other weights than seed 0
    path = save_pth(tmp_path / "tiny.pth", trained, prefix="module.")
    model = build(config="tiny", checkpoint=path)
    assert same_weights(model.transformer, trained)
    assert not same_weights(build(config="tiny").transformer, trained)  # the random model is another one


def test_tiny_with_a_checkpoint_of_another_shape_is_refused(tmp_path):
    other = tiny_maskgit(0, with_vqgan=False, depth=3).transformer
    with pytest.raises(
        CheckpointError, match="does not fit MaskTransformer: unexpected keys: transformer.layers.2"
    ):
        build(config="tiny", checkpoint=save_pth(tmp_path / "deep.pth", other))
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        build(config="tiny", checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="seed applies to the random tiny model only"):
        build(config="tiny", checkpoint=str(tmp_path / "deep.pth"), seed=3)


SHAPE = TransformerConfig(grid=3, codebook_size=20, nclass=7, hidden_dim=32, depth=3, heads=4, mlp_dim=40,
                          dropout=0.1)  # fmt: skip


def test_auto_reads_every_shape_from_the_file(tmp_path):
    torch.manual_seed(0)
    saved = MaskTransformer(SHAPE)
    path = save_pth(tmp_path / "any.pth", saved)
    for split in ({"codebook": 20}, {"classes": 7}, {"codebook": 20, "classes": 7}):
        model = build(config="auto", checkpoint=path, heads=4, **split)
        assert model.transformer.cfg == SHAPE and same_weights(model.transformer, saved)
        assert model.vqgan is None and model.num_image_tokens == 9 and model.nclass == 7
    assert build(config="auto", checkpoint=path, codebook=20).transformer.cfg.heads == 16  # MaskGIT-pytorch's
    assert build(config="auto", checkpoint=path, codebook=20).default_sampling == IMAGENET_SAMPLING


def test_auto_refuses_what_the_file_cannot_tell(tmp_path):
    path = save_pth(tmp_path / "any.pth", MaskTransformer(SHAPE))
    with pytest.raises(ValueError, match="give codebook=V or classes=C"):
        build(config="auto", checkpoint=path)
    with pytest.raises(CheckpointError, match="vocabulary 29 != codebook 20 \\+ classes 8 \\+ 2"):
        build(config="auto", checkpoint=path, codebook=20, classes=8)
    with pytest.raises(ValueError, match="width 32 is not divisible by heads=5"):
        build(config="auto", checkpoint=path, codebook=20, heads=5)
    with pytest.raises(ValueError, match="needs a local checkpoint"):
        build(config="auto")
    with pytest.raises(ValueError, match="apply to config=auto only"):
        build(config="tiny", heads=4)
    with pytest.raises(UnknownNameError, match="unknown maskgit config 'autom'.*auto"):
        build(config="autom")


def test_auto_takes_the_codebook_from_the_vqgan(tmp_path, monkeypatch):
    shape = dataclasses.replace(SHAPE, codebook_size=16, nclass=11, heads=16)  # the tiny VQGAN has 16 codes
    path = save_pth(tmp_path / "any.pth", MaskTransformer(shape))
    vq = tiny_maskgit(0).vqgan
    vq_path = tmp_path / "last.ckpt"
    torch.save({"state_dict": vq.state_dict()}, vq_path)
    with pytest.raises(CheckpointError, match="does not fit VQModel"):  # not the ImageNet VQGAN's shape
        build(config="auto", checkpoint=path, vqgan=str(vq_path))
    from base_models.maskgit import plugin

    monkeypatch.setattr(plugin, "IMAGENET_VQGAN", vq.cfg)
    model = build(config="auto", checkpoint=path, vqgan=str(vq_path))
    assert model.transformer.cfg == shape and model.vqgan is not None
    with pytest.raises(ValueError, match="codebook=20 but the VQGAN"):
        build(config="auto", checkpoint=path, vqgan=str(vq_path), codebook=20)


# ------------------------------------------------------------- item 5: sampling options
def test_imagenet_defaults_are_migm_shortcuts_maskgit_settings():
    # Kaiwen-Zhu/MIGM-Shortcut MaskGIT-Shortcut/main.py: --step 15, --cfg_w 2.8, --r_temp 7, --sm_temp 1,
    # --sched_mode arccos; Trainer/vit.py sample(): linear CFG ramp, confidence + Gumbel reveal
    assert IMAGENET_SAMPLING == SamplingSettings(steps=15, cfg_weight=2.8, cfg_schedule="linear",
                                                 mask_schedule="arccos", temperature=1.0,
                                                 gumbel_temperature=7.0, reveal_policy="confidence")  # fmt: skip


def test_fashion_defaults_do_not_move():
    assert FASHION_SAMPLING == SamplingSettings(steps=16, cfg_weight=3.0, cfg_schedule="linear",
                                                mask_schedule="arccos", temperature=1.0,
                                                gumbel_temperature=4.5, reveal_policy="confidence")  # fmt: skip
    assert apply_sampling_options(FASHION_SAMPLING, FashionConfig()) == FASHION_SAMPLING


ALL = {"steps": "5", "cfg_weight": "1.5", "cfg_schedule": "constant", "mask_schedule": "cosine",
       "temperature": "0.5", "gumbel_temperature": "2", "reveal_policy": "halton"}  # fmt: skip
EXPECTED = SamplingSettings(steps=5, cfg_weight=1.5, cfg_schedule="constant", mask_schedule="cosine",
                            temperature=0.5, gumbel_temperature=2.0, reveal_policy="halton")  # fmt: skip


def test_every_sampling_setting_is_a_spec_option(manager):
    assert build().default_sampling == TINY_SAMPLING
    assert manager.make_base_model("maskgit:config=tiny", "cpu").default_sampling == TINY_SAMPLING
    spec = "maskgit:" + ",".join(f"{k}={v}" for k, v in ALL.items())
    assert manager.make_base_model(spec, "cpu").default_sampling == EXPECTED
    fashion = build_config(FashionConfig, ALL, owner="fashion")
    assert apply_sampling_options(FASHION_SAMPLING, fashion) == EXPECTED
    one = build_config(FashionConfig, {"gumbel_temperature": "0"}, owner="fashion")
    assert apply_sampling_options(FASHION_SAMPLING, one) == dataclasses.replace(
        FASHION_SAMPLING, gumbel_temperature=0.0
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("steps", "-1", "steps must be >= 1"),
        ("temperature", "0", "temperature must be > 0"),
        ("gumbel_temperature", "-2", "gumbel_temperature must be >= 0"),
        ("cfg_schedule", "cosine", "unknown cfg_schedule 'cosine'; choose one of linear, constant"),
        ("mask_schedule", "square", "unknown mask_schedule 'square'; choose one of arccos, cosine, linear"),
        ("reveal_policy", "random", "unknown reveal_policy 'random'; choose one of confidence, halton"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(key, value, message):
    with pytest.raises(ValueError, match=message):
        build(**{key: value})
    with pytest.raises(ValueError, match=message):
        apply_sampling_options(FASHION_SAMPLING, build_config(FashionConfig, {key: value}), owner="fashion")


def test_the_tiny_default_is_unchanged_by_the_new_fields():
    assert TINY_TRANSFORMER == build().transformer.cfg


def test_tiny_with_a_vqgan_file_loads_it(tmp_path):
    trained = tiny_maskgit(5).vqgan
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": trained.state_dict()}, path)
    model = build(config="tiny", vqgan=str(path))
    loaded, saved = model.vqgan.state_dict(), trained.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert same_weights(model.transformer, build(config="tiny").transformer)  # the transformer stays random


def test_auto_loads_a_shipped_safetensors_with_its_own_config():
    from base_models.fashion.plugin import WEIGHTS

    model = build(config="auto", checkpoint=str(WEIGHTS / "maskgit.safetensors"))
    assert model.num_image_tokens == 64 and model.transformer.cfg.depth == 12 and model.vqgan is None
    with pytest.raises(ValueError, match="carries its own heads/codebook/classes"):
        build(config="auto", checkpoint=str(WEIGHTS / "maskgit.safetensors"), heads=4)
