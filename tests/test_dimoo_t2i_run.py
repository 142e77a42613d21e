"""A text-to-image run end to end on the tiny DiMOO checkpoint (issues 12 and 13): the `dimoo`
base model with prompts from a file, every training-free accelerator, CLIPScore and ImageReward
from local weight files written by the test (no network), and the Pareto figure with either
metric on the quality axis."""

from __future__ import annotations

import importlib
import json

import pandas as pd
import pytest
from test_t2i_metrics import offline, tiny_clip, tiny_reward  # noqa: F401 (fixtures)

pytest.importorskip("tokenizers")
pytest.importorskip("diffusers")

import bench.plugins
from base_models.dimoo.testing import write_tiny_checkpoint
from bench.cli import main
from bench.plugins import BUILTIN_PLUGINS, PluginManager
from bench.runner import Sweep, run_sweep
from metrics.prompts import prompts_hash

PROMPTS = ["a red cat on a mat", "a blue dog", "a small green photo of the sky"]
ACCELERATORS = ["few-step:steps=4", "ml-cache:warmup_ratio=0.2,refresh_interval=3", "recap:pre_full_iters=2",
                "taylorseer:interval=2", "dllm-cache:gen_interval=2"]  # fmt: skip


@pytest.fixture
def builtins(monkeypatch) -> PluginManager:
    """Every built-in plugin (the dimoo base model, all accelerators, the text-to-image metrics),
    installed as the CLI's manager."""
    manager = PluginManager(autoload=False, plugins=[importlib.import_module(n) for n in BUILTIN_PLUGINS])
    monkeypatch.setattr(bench.plugins, "_default_manager", manager)
    return manager


@pytest.fixture
def t2i_weights(tiny_clip, tiny_reward, monkeypatch):  # noqa: F811 (the imported fixtures)
    config, weights, _ = tiny_clip
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(weights))
    monkeypatch.setenv("MIGM_CLIP_MODEL", str(config))
    folder, _ = tiny_reward
    monkeypatch.setenv("MIGM_IMAGE_REWARD_WEIGHTS", str(folder / "ImageReward.pt"))


def test_a_dimoo_run_reports_clip_score_and_image_reward(builtins, t2i_weights, offline, tmp_path, capsys):  # noqa: F811
    checkpoint = write_tiny_checkpoint(tmp_path / "dimoo")
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n")
    run = Sweep(model=f"dimoo:checkpoint={checkpoint},resolution=64,steps=8", accelerators=ACCELERATORS,
                images=4, batch_size=2, metrics=["clip_score", "image_reward", "token_agreement"], replicates=1,
                warmup=0, out=str(tmp_path / "results"), name="t2i", device="cpu", prompts=str(prompt_file))  # fmt: skip
    run_dir = run_sweep(run, manager=builtins, progress=False)

    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    assert len(summary) == 1 + len(ACCELERATORS) and (summary.status == "ok").all()
    assert summary.clip_score.between(0, 100).all() and summary.image_reward.notna().all()
    vanilla = summary[summary.accelerator == "vanilla"].iloc[0]
    assert vanilla.token_agreement == 1.0 and vanilla.full_forwards == 8
    cached = summary[summary.accelerator != "vanilla"]
    assert (cached.full_forwards < 8).all()  # every accelerator really skipped work on DiMOO
    record = json.loads((run_dir / "run.json").read_text())["prompts"]
    assert record["sha256"] == prompts_hash([PROMPTS[i % 3] for i in range(4)])

    for metric, label in (("clip_score", "CLIPScore"), ("image_reward", "ImageReward")):
        capsys.readouterr()
        assert main(["plot", str(run_dir), "--quality", metric]) == 0
        assert (run_dir / "plots" / f"pareto_{metric}.png").read_bytes()[:4] == b"\x89PNG"
        points = pd.read_csv(run_dir / "plots" / "pareto_points.csv")
        assert (points.metric == metric).sum() == len(summary)  # every configuration, vanilla included
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "CLIPScore" in out and "ImageReward" in out
