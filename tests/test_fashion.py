"""The embedded default: shipped weights load, bad weights and missing data fail clearly."""

from __future__ import annotations

import json

import pytest
import torch

from base_models.fashion.data import DatasetMissing, load_fashion_mnist, to_model_images
from base_models.fashion.plugin import WEIGHTS, FashionConfig, load_fashion
from base_models.maskgit.checkpoint import CheckpointError, load_vqgan_safetensors, read_safetensors
from bench.forward import full_forward, logits_of


def test_shipped_weights_load_with_provenance():
    model = load_fashion()
    assert (model.num_image_tokens, model.seq_len, model.codebook_size, model.dim) == (64, 65, 256, 128)
    assert len(model.blocks) == 12
    for name, kind in (("maskgit", "maskgit-transformer"), ("tokenizer", "vqgan")):
        _, meta = read_safetensors(WEIGHTS / f"{name}.safetensors", kind)
        assert meta["data_hash"] and meta["training"]["steps"] > 0
    assert len(model.fingerprint()) == 16
    tokens = torch.randint(0, 256, (2, 64))
    feats, _ = full_forward(model, tokens, torch.tensor([3, -1]))
    assert torch.isfinite(logits_of(model, feats)).all()
    images = model.decode(tokens)
    assert images.shape == (2, 1, 32, 32) and images.min() >= 0 and images.max() <= 1


def test_models_declare_their_dataset_and_fashion_metrics_check_it():
    """BaseModel.dataset says what a model was trained on; the Fashion metrics read it (no
    attribute probing) and refuse any other model in one line naming both."""
    from base_models.fashion.metrics import require_fashion
    from base_models.maskgit.testing import tiny_maskgit
    from bench.specs import MetricUnavailable

    require_fashion(load_fashion(), "fid")  # accepted
    tiny = tiny_maskgit(0)
    assert tiny.dataset is None  # random weights: trained on nothing
    with pytest.raises(MetricUnavailable) as refused:
        require_fashion(tiny, "fid")
    message = str(refused.value)
    assert "\n" not in message and "fid needs a Fashion-MNIST model" in message
    assert "'maskgit-tiny' has dataset=None" in message


def test_tokenizer_reconstructs_test_images():
    """The shipped tokenizer's metadata promises all codes used and a real reconstruction."""
    _, meta = read_safetensors(WEIGHTS / "tokenizer.safetensors", "vqgan")
    assert meta["codes_used"] >= 256 * 0.9 and meta["test_psnr_db"] > 20
    vq = load_vqgan_safetensors(WEIGHTS / "tokenizer.safetensors")
    images, _ = load_fashion_mnist("test")
    x = to_model_images(images[:16])
    with torch.no_grad():
        rec = (vq.decode_code(vq.encode(x * 2 - 1)).clamp(-1, 1) + 1) / 2
    psnr = 10 * torch.log10(1 / (rec - x).pow(2).mean())
    assert psnr > 18


def test_corrupt_weights_file_names_the_file(tmp_path):
    bad = tmp_path / "maskgit.safetensors"
    good = (WEIGHTS / "maskgit.safetensors").read_bytes()
    bad.write_bytes(good[: len(good) // 3])  # truncated
    with pytest.raises(CheckpointError, match="maskgit.safetensors"):
        load_fashion(FashionConfig(transformer=str(bad)))


def test_wrong_kind_of_weights_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer.safetensors.*expected 'maskgit-transformer'"):
        load_fashion(FashionConfig(transformer=str(WEIGHTS / "tokenizer.safetensors")))


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        load_fashion(FashionConfig(tokenizer=str(tmp_path / "nowhere.safetensors")))


def test_missing_dataset_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MIGM_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")


def test_metadata_is_json(tmp_path):
    _, meta = read_safetensors(WEIGHTS / "maskgit.safetensors", "maskgit-transformer")
    assert json.loads(json.dumps(meta["config"]))["depth"] == 12
