"""The ``fashion-t2i`` base model (issue 14, item 4): a tiny checkpoint trained here in DiMOO's
layout (``train-base vqvae-t2i`` + ``dimoo-t2i`` at toy sizes, as tests/test_fashion_t2i_dimoo.py)
and a tiny CLIP trained for 3 steps (as tests/test_fashion_t2i_clip.py), on the tiny Fashion-MNIST
of conftest. Checked: the model and its caption prompts, the missing-folder error, the named
prompt set, the model's default metrics in the runner, clip_score with the model's own CLIP (and
its start-up refusal without one), and a run end to end through the CLI."""

from __future__ import annotations

import importlib
import json

import pandas as pd
import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

from test_fashion_t2i_clip import TINY as TINY_CLIP  # skips without open_clip
from test_fashion_t2i_clip import _run as run_clip
from test_fashion_t2i_dimoo import run_dimoo, run_vqvae

import bench.plugins
from base_models.fashion_t2i import plugin as t2i
from base_models.fashion_t2i.captions import make_split
from bench.cli import main
from bench.hookspecs import hookimpl
from bench.metric_set import MetricSet
from bench.plugins import PluginManager
from bench.runner import Sweep, SweepError, run_sweep
from bench.specs import BaseModelSpec
from metrics.prompts import prompts_hash

HOOKS = "base_models.fashion_t2i.hooks"
EXPECTED_DEFAULTS = ["clip_score", "attribute_accuracy", "attr_class_accuracy", "attr_size_accuracy",
                     "attr_position_accuracy", "attr_tone_accuracy", "fid_attributes", "kid_attributes",
                     "feature_cosine", "psnr_vs_vanilla", "ssim_vs_vanilla", "token_agreement"]  # fmt: skip


@pytest.fixture(scope="module")
def weights(tiny_fashion, tmp_path_factory):
    """(checkpoint folder, CLIP folder), both trained here at toy sizes."""
    root = tmp_path_factory.mktemp("fashion-t2i")
    run_vqvae(root / "checkpoint", tiny_fashion, root / "work")
    run_dimoo(root / "checkpoint", tiny_fashion, root / "work")
    config = root / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    argv = ["--out", str(root / "clip"), "--work", str(root / "work"), "--data", str(tiny_fashion), "--steps", "3",
            "--batch-size", "16", "--eval-images", "0", "--config", str(config)]  # fmt: skip
    assert run_clip(argv) == 0
    return root / "checkpoint", root / "clip"


@pytest.fixture
def data(tiny_fashion, monkeypatch):
    """The tiny Fashion-MNIST as the default data folder (the captions come from it)."""
    monkeypatch.setenv("MIGM_FASHION_MNIST", str(tiny_fashion))
    monkeypatch.delenv("MIGM_CLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("MIGM_CLIP_MODEL", raising=False)
    return tiny_fashion


@pytest.fixture
def builtins(monkeypatch) -> PluginManager:
    """Every built-in plugin and the fashion-t2i hooks (registered explicitly: the installed entry
    points are /work/main's), as the CLI's manager."""
    names = dict.fromkeys([*bench.plugins.BUILTIN_PLUGINS, HOOKS])
    manager = PluginManager(autoload=False, plugins=[importlib.import_module(n) for n in names])
    monkeypatch.setattr(bench.plugins, "_default_manager", manager)
    return manager


def spec(weights, **options) -> str:
    checkpoint, clip = weights
    extra = "".join(f",{k}={v}" for k, v in options.items())
    return f"fashion-t2i:checkpoint={checkpoint},clip={clip}{extra}"


def captions(split: str, seed: int = 0, n: int | None = None) -> list[str]:
    full = make_split(split, seed)
    return full.captions(torch.arange(len(full) if n is None else n))


# ------------------------------------------------------------------------ the model
def test_the_model_loads_the_folder_with_its_name_dataset_steps_and_heldout_captions(builtins, data, weights):
    model = builtins.make_base_model(spec(weights))
    assert isinstance(model, t2i.FashionT2IModel)
    assert model.name == "fashion-t2i" and model.dataset == "fashion-mnist-t2i"
    assert model.default_sampling.steps == 16 and model.default_sampling.cfg_weight == 1.0
    assert (model.rows, model.cols) == (8, 8)  # 32x32 pixels, the VQ's factor 4
    assert model.decode(torch.zeros(2, 64, dtype=torch.long)).shape == (2, 1, 32, 32)
    heldout = captions("heldout")
    assert model.prompts == heldout and len(heldout) == 32  # image i gets caption i of the held-out split
    assert model.condition_prompts(model.conditions(3, torch.Generator())) == heldout[:3]
    record = model.prompt_record()
    assert (record["split"], record["seed"], record["count"]) == ("heldout", 0, 32)
    assert model.default_metrics() == EXPECTED_DEFAULTS
    clip = weights[1]
    assert model.clip_weights() == (str(clip / "clip-t2i.json"), str(clip / "clip-t2i.safetensors"))


def test_the_prompts_option_chooses_the_split_the_seed_or_a_file(builtins, data, weights, tmp_path):
    seeded = builtins.make_base_model(spec(weights, seed=1, steps=4, cfg=0))
    assert seeded.prompts == captions("heldout", seed=1) != captions("heldout")
    assert seeded.prompt_record()["seed"] == 1 and seeded.default_sampling.steps == 4
    assert seeded.default_sampling.cfg_weight == 0.0
    train = builtins.make_base_model(spec(weights, prompts="train"))
    assert train.prompts == captions("train") and train.prompt_record()["split"] == "train"
    assert not set(train.prompts) & set(captions("heldout"))  # collecting never sees the evaluation captions
    path = tmp_path / "mine.txt"
    path.write_text("a large boot\na small bag\n")
    mine = builtins.make_base_model(spec(weights, prompts=path))
    assert mine.prompts == ["a large boot", "a small bag"] and mine.prompt_record()["source"] == str(path)


def test_a_missing_checkpoint_folder_names_the_commands_that_make_it(builtins, data, tmp_path, monkeypatch):
    monkeypatch.setattr(t2i, "CHECKPOINT", tmp_path / "absent")  # the shipped folder, not made yet
    with pytest.raises(FileNotFoundError) as err:
        builtins.make_base_model("fashion-t2i")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "absent") in message
    assert "`migm-bench train-base vqvae-t2i --ship` then `migm-bench train-base dimoo-t2i --ship`" in message
    with pytest.raises(FileNotFoundError, match="train-base dimoo-t2i --ship"):
        builtins.make_base_model(f"fashion-t2i:checkpoint={tmp_path / 'elsewhere'}")


# ---------------------------------------------------------------------- prompt set
def test_the_named_prompt_set_gives_the_captions_of_a_split(builtins, data):
    prompts, record = builtins.resolve_prompts("fashion-t2i:split=heldout,limit=5,seed=0")
    assert prompts == captions("heldout", n=5)
    assert [record[k] for k in ("split", "seed", "limit", "count", "of")] == ["heldout", 0, 5, 5, 32]
    assert record["spec"] == "fashion-t2i:split=heldout,limit=5,seed=0"
    assert builtins.resolve_prompts("fashion-t2i:split=test,seed=2")[0] == captions("test", seed=2)
    assert builtins.resolve_prompts("fashion-t2i")[0] == captions("heldout")
    with pytest.raises(ValueError, match="unknown split 'eval'"):
        builtins.resolve_prompts("fashion-t2i:split=eval")
    with pytest.raises(ValueError, match="unknown option 'limt'.*limit"):
        builtins.resolve_prompts("fashion-t2i:limt=3")
    assert builtins.resolve_prompts("parti:limit=2")[1]["count"] == 2  # the catch-all still answers the rest


def test_migm_bench_prompts_lists_the_named_set(builtins, data, capsys):
    assert main(["prompts", "fashion-t2i:split=test,limit=3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["prompts"] == captions("test", n=3) and shown["split"] == "test"
    assert main(["prompts", "fashion-t2i:split=x"]) == 2
    assert "unknown split 'x'" in capsys.readouterr().err
    assert main(["prompts", "nothing"]) == 2
    assert "unknown prompt set 'nothing'" in capsys.readouterr().err


def test_run_prompts_takes_the_named_set(builtins, data, weights, tmp_path):
    run = Sweep(model=spec(weights, steps=2), accelerators=[], images=3, batch_size=3, metrics=["token_agreement"],
                replicates=1, warmup=0, out=str(tmp_path), name="p", device="cpu",
                prompts="fashion-t2i:split=test,limit=2,seed=0")  # fmt: skip
    run_dir = run_sweep(run, manager=builtins, progress=False)
    record = json.loads((run_dir / "run.json").read_text())["prompts"]
    assert record["selection"]["split"] == "test" and record["selection"]["count"] == 2
    assert record["count"] == 3  # images: prompt i mod 2


# ----------------------------------------------------------------- default metrics
def _declaring_model(config, device):
    """The test manager's tiny MaskGIT with a ``default_metrics()`` of its own."""
    from base_models.maskgit.plugin import MaskGITPluginConfig, build_maskgit

    model = build_maskgit(MaskGITPluginConfig(config="tiny"), device)
    model.default_metrics = lambda: ["mean_pixel"]
    return model


class DeclaringPlugin:
    @hookimpl
    def register_base_models(self, register):
        from dataclasses import make_dataclass

        register(BaseModelSpec(name="declaring", config_cls=make_dataclass("DeclaringConfig", [], frozen=True),
                               factory=_declaring_model, description="test: declares its default metrics"))  # fmt: skip


def _default_run(manager, tmp_path, model: str, name: str) -> list[str]:
    run = Sweep(model=model, accelerators=["few-step:steps=2"], images=2, batch_size=2, metrics=None,
                replicates=1, warmup=0, out=str(tmp_path), name=name, device="cpu")  # fmt: skip
    run_dir = run_sweep(run, manager=manager, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    assert sorted(m["name"] for m in info["metrics"]) == info["compat"]["metrics"]
    return [m["name"] for m in info["metrics"]]


def test_the_runner_uses_the_models_default_metrics_without_metrics(manager, tmp_path):
    manager.register(DeclaringPlugin())
    assert manager.default_metrics() == ["same_tokens"]
    assert _default_run(manager, tmp_path, "declaring", "own") == ["mean_pixel"]
    summary = pd.read_csv(tmp_path / "own" / "summary.csv")
    assert "mean_pixel" in summary and "same_tokens" not in summary
    assert _default_run(manager, tmp_path, "declaring", "own") == ["mean_pixel"]  # resumes: same metrics
    assert _default_run(manager, tmp_path, "maskgit:config=tiny", "registry") == ["same_tokens"]
    other = Sweep(model="declaring", accelerators=[], images=2, batch_size=2, metrics=["same_tokens"],
                  replicates=1, warmup=0, out=str(tmp_path), name="own", device="cpu")  # fmt: skip
    with pytest.raises(SweepError, match=r"metrics \['mean_pixel'\] -> \['same_tokens'\]"):
        run_sweep(other, manager=manager, progress=False)


# ---------------------------------------------------------------------- clip_score
def test_clip_score_uses_the_models_own_clip_without_the_variable(builtins, data, weights):
    from base_models.fashion_t2i.clip import load_clip

    model = builtins.make_base_model(spec(weights, steps=2))
    metrics = MetricSet(builtins, ["clip_score"], reference="vanilla")  # no $MIGM_CLIP_WEIGHTS: not refused
    metrics.prepare(model, images=2)
    scorer = metrics.objects["clip_score"].scorer
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = load_clip(weights[1])(images, model.prompts[:2])
    assert torch.allclose(scorer(images, model.prompts[:2]), expected)


def test_the_variable_wins_over_the_models_clip(builtins, data, weights, monkeypatch):
    from metrics.clip_score import ClipScoreConfig

    model = builtins.make_base_model(spec(weights, steps=2))
    assert ClipScoreConfig.from_env(model).weights == str(weights[1] / "clip-t2i.safetensors")
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", "/elsewhere/clip.safetensors")
    assert ClipScoreConfig.from_env(model).weights == "/elsewhere/clip.safetensors"


def test_clip_score_is_refused_at_start_up_for_a_model_without_a_clip(
    builtins, data, weights, tmp_path, capsys
):
    from base_models.dimoo.testing import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "dimoo")
    run = Sweep(model=f"dimoo:checkpoint={checkpoint},resolution=64,steps=2", accelerators=[], images=2,
                batch_size=2, metrics=["clip_score"], replicates=1, warmup=0, out=str(tmp_path), name="r",
                device="cpu")  # fmt: skip
    with pytest.raises(SweepError, match=r"^metric 'clip_score' is unavailable: clip_score needs local CLIP "
                                         r"weights: set \$MIGM_CLIP_WEIGHTS=\S+ \(and \$MIGM_CLIP_MODEL"):  # fmt: skip
        run_sweep(run, manager=builtins, progress=False)
    assert not (tmp_path / "r").exists()  # nothing generated, no run folder
    missing = Sweep(**{**run.__dict__, "model": spec((weights[0], tmp_path / "no-clip"), steps=2)})
    with pytest.raises(SweepError, match="the CLIP of base model 'fashion-t2i' is missing: .*no-clip"):
        run_sweep(missing, manager=builtins, progress=False)
    assert main(["ls"]) == 0  # the reason, and that a base model can supply the weights
    line = next(
        line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("clip_score")
    )
    assert "UNAVAILABLE: clip_score needs local CLIP weights" in line
    assert line.endswith("(unless the base model supplies it)")


# ------------------------------------------------------------------------ a run
def test_a_fashion_t2i_run_end_to_end(builtins, data, weights, tmp_path, capsys):
    metrics = "clip_score,psnr_vs_vanilla,ssim_vs_vanilla,feature_cosine,token_agreement"
    argv = ["run", "--model", spec(weights), "--images", "4", "--batch-size", "2", "--accel", "few-step:steps=2",
            "--metrics", metrics, "--replicates", "1", "--device", "cpu", "--no-progress", "--out",
            str(tmp_path), "--name", "t2i"]  # fmt: skip
    assert main(argv) == 0
    summary = pd.read_csv(tmp_path / "t2i" / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(summary.accelerator) == ["vanilla", "few-step"] and (summary.status == "ok").all()
    assert summary.clip_score.between(0, 100).all()
    vanilla, few = summary.iloc[0], summary.iloc[1]
    assert vanilla.full_forwards == 16 and few.full_forwards == 2
    assert vanilla.token_agreement == 1.0 and vanilla.ssim_vs_vanilla == pytest.approx(1.0)
    assert vanilla.feature_cosine == pytest.approx(1.0)
    for name in ("psnr_vs_vanilla", "ssim_vs_vanilla", "feature_cosine", "token_agreement"):
        assert pd.notna(few[name]) and few[name] <= vanilla[name]
    info = json.loads((tmp_path / "t2i" / "run.json").read_text())
    selection = info["prompts"]["selection"]  # the model's own prompt record
    assert (selection["split"], selection["seed"], selection["count"]) == ("heldout", 0, 32)
    assert info["prompts"]["sha256"] == prompts_hash(captions("heldout", n=4))
    assert main(["plot", str(tmp_path / "t2i"), "--quality", "clip_score"]) == 0
    assert (tmp_path / "t2i" / "plots" / "pareto_clip_score.png").read_bytes()[:4] == b"\x89PNG"
