"""`migm-bench run --prompts SPEC` on a text-to-image base model: the prompts reach the model
(``bench.protocol.use_prompts``) and the metrics, run.json records them, a resumed run with
other prompts is refused, CLIPScore is the quality axis of a Pareto figure, and the error paths
(a model without prompts support, an unknown set, an empty file) are one line at start-up.

The text-to-image model is the tiny MaskGIT with prompts attached (prompt index = class);
CLIPScore uses the tiny open_clip CLIP of tests/test_t2i_metrics.py, written by the test
(skipped without open_clip)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from test_t2i_metrics import tiny_clip  # noqa: F401 (a fixture: a tiny open_clip CLIP on disk)

from bench.cli import main
from bench.hookspecs import hookimpl
from bench.protocol import MetricInfo, PromptsUnsupported, prompt_conditions, use_prompts
from bench.runner import Sweep, SweepError, run_sweep
from bench.specs import BaseModelSpec, MetricSpec, MetricValue
from metrics import plugin as t2i_plugin
from metrics.prompts import load_prompts, prompts_hash

DEFAULT_PROMPTS = ["a red square", "a blue circle"]
FILE_PROMPTS = ["a cat on a mat", "a dog in the rain", "a small boat"]


@dataclass(frozen=True)
class TinyT2IConfig:
    ignore_prompts: bool = False  # a broken model: takes the prompts but keeps drawing its own


def build_tiny_t2i(config: TinyT2IConfig, device):
    """The tiny MaskGIT as a text-to-image model: condition c is prompt c (c < 10 classes).
    Default: conditions drawn from DEFAULT_PROMPTS; after use_prompts, image i gets prompt i mod k."""
    from base_models.maskgit.plugin import MaskGITPluginConfig, build_maskgit

    model = build_maskgit(MaskGITPluginConfig(), device)
    state = {"prompts": list(DEFAULT_PROMPTS), "record": {"spec": "tiny default prompts"}, "given": False}

    def conditions(n, generator):
        if state["given"] and not config.ignore_prompts:
            return prompt_conditions(n, len(state["prompts"])).to(device)
        return torch.randint(0, len(DEFAULT_PROMPTS), (n,), generator=generator).to(device)

    def take(prompts, record):
        state.update(prompts=prompts, record=record, given=True)

    model.conditions = conditions
    model.condition_prompts = lambda cond: [state["prompts"][int(c)] for c in cond]
    model.prompt_record = lambda: state["record"]
    model.use_prompts = take
    return model


class PromptLength:
    """Mean prompt length in characters: shows which prompt each image was scored with."""

    info = MetricInfo("prompt_length", "chars", True, "condition")

    def compute(self, generated, ctx) -> float:
        lengths = torch.tensor([len(p) for p in generated.prompts], dtype=torch.float64)
        return MetricValue(float(lengths.mean()), lengths)


class TinyT2IPlugin:
    @staticmethod
    @hookimpl
    def register_base_models(register):
        register(BaseModelSpec(name="tiny-t2i", config_cls=TinyT2IConfig, factory=build_tiny_t2i))

    @staticmethod
    @hookimpl
    def register_metrics(register):
        register(MetricSpec(info=PromptLength.info, factory=lambda model: PromptLength(), default=False))


@pytest.fixture
def t2i_manager(manager):
    manager.register(t2i_plugin)
    manager.register(TinyT2IPlugin)
    return manager


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "my_prompts.txt"
    path.write_text("\n".join(FILE_PROMPTS) + "\n\n")  # a blank line is skipped
    return path


def sweep(tmp_path, **kw) -> Sweep:
    opts = {"model": "tiny-t2i", "accelerators": ["few-step:steps=3"], "images": 5, "batch_size": 2,
            "metrics": ["prompt_length"], "replicates": 1, "warmup": 0, "out": str(tmp_path / "results"),
            "name": "run", "device": "cpu"}  # fmt: skip
    return Sweep(**{**opts, **kw})


def per_image(n: int, prompts: list[str]) -> list[str]:
    return [prompts[i % len(prompts)] for i in range(n)]


# ------------------------------------------------------------------ the prompts reach the run
def test_prompts_from_a_file_reach_every_image_and_run_json(t2i_manager, prompt_file, tmp_path):
    run_dir = run_sweep(sweep(tmp_path, prompts=str(prompt_file)), manager=t2i_manager, progress=False)
    used = per_image(5, FILE_PROMPTS)  # image i gets prompt i mod 3
    summary = pd.read_csv(run_dir / "summary.csv")
    assert (summary.status == "ok").all() and len(summary) == 2
    assert summary.prompt_length.tolist() == pytest.approx([sum(map(len, used)) / 5] * 2)
    rows = pd.read_csv(run_dir / "measurements.csv")
    per = rows[(rows.metric == "prompt_length_per_image") & (rows.accelerator == "few-step")]
    assert per.value.tolist() == [len(p) for p in used]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["prompts"] == {
        "count": 5,
        "distinct": 3,
        "sha256": prompts_hash(used),
        "selection": load_prompts(str(prompt_file)).record(),  # spec, file hash, prompts hash
    }
    assert info["sweep"]["prompts"] == str(prompt_file)
    assert info["compat"]["prompts"] == f"3 prompts, sha256 {prompts_hash(FILE_PROMPTS)}"


def test_a_named_set_with_selection(t2i_manager, tmp_path):
    run_dir = run_sweep(sweep(tmp_path, prompts="parti:category=Animals,limit=4", accelerators=[], images=4,
                              batch_size=4), manager=t2i_manager, progress=False)  # fmt: skip
    chosen = load_prompts("parti:category=Animals,limit=4")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["prompts"]["sha256"] == prompts_hash(chosen.prompts)
    assert info["prompts"]["selection"]["filters"] == {"category": ["Animals"]}
    assert info["prompts"]["selection"]["count"] == 4


def test_without_prompts_a_text_to_image_model_uses_its_own(t2i_manager, tmp_path):
    run_dir = run_sweep(sweep(tmp_path, accelerators=[]), manager=t2i_manager, progress=False)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["prompts"]["selection"] == {"spec": "tiny default prompts"}
    assert info["compat"]["prompts"] is None and info["prompts"]["distinct"] <= len(DEFAULT_PROMPTS)


def test_a_resumed_run_with_other_prompts_is_refused(t2i_manager, prompt_file, tmp_path):
    run_sweep(sweep(tmp_path, prompts=str(prompt_file), accelerators=[]), manager=t2i_manager, progress=False)
    other = tmp_path / "other.txt"
    other.write_text("a green tree\n")
    with pytest.raises(SweepError, match=r"different sweep \(prompts '3 prompts, sha256 \w+' -> '1 prompts"):
        run_sweep(sweep(tmp_path, prompts=str(other), accelerators=[]), manager=t2i_manager, progress=False)
    with pytest.raises(SweepError, match=r"different sweep \(prompts '3 prompts, sha256 \w+' -> None"):
        run_sweep(sweep(tmp_path, accelerators=[]), manager=t2i_manager, progress=False)
    # the same prompts through a copy of the file: the same run, resumed (nothing left to do)
    copy = tmp_path / "copy.txt"
    copy.write_text(prompt_file.read_text())
    run_sweep(sweep(tmp_path, prompts=str(copy), accelerators=[]), manager=t2i_manager, progress=False)


def test_derived_run_names_tell_prompts_apart(t2i_manager, prompt_file, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("a green tree\n")
    dirs = [run_sweep(sweep(tmp_path, name=None, accelerators=[], images=2, prompts=p), manager=t2i_manager,
                      progress=False).name for p in (str(prompt_file), str(other), None)]  # fmt: skip
    assert len(set(dirs)) == 3 and f"prompts{prompts_hash(FILE_PROMPTS)[:8]}" in dirs[0]


# ------------------------------------------------------------------ errors at start-up
@pytest.mark.parametrize(
    ("model", "spec", "message"),
    [
        (
            "maskgit:config=tiny",
            "FILE",
            r"base model 'maskgit-tiny' does not take prompts \(it has no use_prompts",
        ),
        ("tiny-t2i", "partii", r"--prompts 'partii': unknown prompt set 'partii'. Did you mean: parti\?"),
        ("tiny-t2i", "EMPTY", r"prompt file .*empty.txt holds no prompts"),
        ("tiny-t2i", "parti:category=Animls", r"unknown category 'Animls'. Did you mean: Animals\?"),
        ("tiny-t2i:ignore_prompts=true", "FILE", r"conditions do not give image i prompt i mod 3"),
    ],
)
def test_bad_prompts_fail_at_start_up(t2i_manager, prompt_file, tmp_path, model, spec, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    spec = {"FILE": str(prompt_file), "EMPTY": str(empty)}.get(spec, spec)
    with pytest.raises(SweepError, match=message):
        run_sweep(sweep(tmp_path, model=model, prompts=spec), manager=t2i_manager, progress=False)
    assert not (tmp_path / "results" / "run").exists()  # nothing generated, no run folder left


def test_no_prompt_set_plugin_is_a_clear_error(manager, prompt_file, tmp_path):
    manager.register(TinyT2IPlugin)
    with pytest.raises(SweepError, match="--prompts .*: no prompt sets are registered"):
        run_sweep(sweep(tmp_path, prompts=str(prompt_file)), manager=manager, progress=False)


def test_use_prompts_refuses_models_without_the_method():
    class ClassConditional:
        name = "class-model"

    with pytest.raises(PromptsUnsupported, match="base model 'class-model' does not take prompts"):
        use_prompts(ClassConditional(), ["a"], {})
    assert prompt_conditions(5, 3).tolist() == [0, 1, 2, 0, 1]


def test_cli_prompts_option_and_one_line_error(default_manager, prompt_file, tmp_path, capsys):
    default_manager.register(t2i_plugin)
    default_manager.register(TinyT2IPlugin)
    args = ["run", "--model", "maskgit:config=tiny", "--accel", "few-step:steps=3", "--images", "2",
            "--prompts", "geneval:limit=2", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "migm-bench: error: --prompts 'geneval:limit=2': base model 'maskgit-tiny' does not take"
    )
    assert len(err.splitlines()) == 1


def test_sweep_file_and_flag_set_the_prompts(manager, prompt_file, tmp_path):
    from bench.cli import build_parser, sweep_from_args

    yaml = tmp_path / "sweep.yaml"
    yaml.write_text(f"model: tiny-t2i\naccelerators: [vanilla]\nprompts: {prompt_file}\n")
    parse = build_parser(manager).parse_args
    assert sweep_from_args(parse(["run", "--config", str(yaml)]), manager).prompts == str(prompt_file)
    flag = sweep_from_args(parse(["run", "--config", str(yaml), "--prompts", "parti:limit=3"]), manager)
    assert flag.prompts == "parti:limit=3"
    default = sweep_from_args(parse(["run", "--prompts", "parti:limit=3"]), manager)
    assert default.name is None  # a changed setting: the default run gets a derived name


# ------------------------------------------------------------------ CLIPScore on the quality axis
@pytest.fixture
def tiny_clip_env(tiny_clip, monkeypatch):  # noqa: F811 (the imported fixture)
    """The tiny open_clip CLIP of the metric tests, configured for clip_score."""
    config, weights, _ = tiny_clip
    monkeypatch.setenv("MIGM_CLIP_WEIGHTS", str(weights))
    monkeypatch.setenv("MIGM_CLIP_MODEL", str(config))
    monkeypatch.delenv("MIGM_CLIP_BATCH_SIZE", raising=False)


def test_clip_score_per_configuration_and_its_pareto_figure(
    default_manager, tiny_clip_env, prompt_file, tmp_path, capsys
):
    from bench.plots import pareto_figure, plot_run

    default_manager.register(t2i_plugin)
    default_manager.register(TinyT2IPlugin)
    run = sweep(tmp_path, accelerators=["few-step:steps=2", "few-step:steps=3"], metrics=["clip_score"],
                prompts=str(prompt_file))  # fmt: skip
    run_dir = run_sweep(run, manager=default_manager, progress=False)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == 3 and (summary.status == "ok").all()
    assert summary.clip_score.between(0, 100).all() and summary.clip_score.notna().all()
    assert json.loads((run_dir / "run.json").read_text())["prompts"]["sha256"] == prompts_hash(
        per_image(5, FILE_PROMPTS)
    )

    # `migm-bench plot RUN --quality clip_score`: the CLIPScore figure only
    capsys.readouterr()
    assert main(["plot", str(run_dir), "--quality", "clip_score"]) == 0
    printed = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in printed] == ["pareto_clip_score.png", "pareto_clip_score.pdf",
                                                      "pareto_points.csv"]  # fmt: skip
    assert (run_dir / "plots" / "pareto_clip_score.png").read_bytes()[:4] == b"\x89PNG"
    points = pd.read_csv(run_dir / "plots" / "pareto_points.csv")
    assert set(points.metric) == {"clip_score"} and len(points) == 3  # vanilla is a point (reference: prompt)
    assert points.higher_is_better.all()
    fig, _ = pareto_figure(run_dir, "clip_score")
    assert fig.axes[0].get_ylabel() == "CLIPScore (higher is better)"
    assert [p.name for p in plot_run(run_dir, tmp_path / "all")][:2] == ["pareto_clip_score.png",
                                                                        "pareto_clip_score.pdf"]  # fmt: skip

    assert main(["plot", str(run_dir), "--quality", "clip_scor"]) == 2
    assert "no quality metric 'clip_scor' in" in capsys.readouterr().err
    assert main(["report", str(run_dir)]) == 0  # the report names it by its label, with its direction
    assert "| CLIPScore ↑ |" in capsys.readouterr().out
