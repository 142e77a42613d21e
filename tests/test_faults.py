"""Fault injection (issue 10): a failed reference, a changed model, a bad metric, corrupt or
hostile files and NaNs never produce rows marked ok, and every bad input gets one clean line.

Each test names the item of issue 10 it covers. ``BAD_INPUTS`` are run through the real CLI
(``bench.cli.main``): each must exit 2 with exactly one ``migm-bench: error:`` line on stderr,
no traceback, and leave no run folder behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import bench_test_plugin
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL

import accelerators.vanilla
import base_models.fashion.hooks
import bench.metric_hooks
import bench.metrics
from accelerators.vanilla import Vanilla
from bench import integrity
from bench.cli import main
from bench.guards import check_run_name, flatten_name
from bench.hookspecs import hookimpl
from bench.protocol import Counts, MetricInfo, StepContext, StepOutput
from bench.results import RunStore
from bench.runner import Runner, Sweep, SweepError, run_sweep
from bench.specs import AcceleratorSpec, MetricSpec

SMALL = ["--images", "2", "--batch-size", "2", "--replicates", "1", "--warmup", "0", "--device", "cpu",
         "--no-progress"]  # fmt: skip


# ------------------------------------------------------------------ a faulty plugin
@dataclass(frozen=True)
class NaNConfig:
    """at_step: the step whose output holds NaN; where: "logits" or "features"."""

    at_step: int = 2
    where: str = "logits"


class NaNAccel(Vanilla):
    def __init__(self, config: NaNConfig) -> None:
        self.config = config
        self.counts = Counts()

    def num_steps(self, default_steps: int) -> int:
        return default_steps

    def step(self, model, ctx: StepContext) -> StepOutput:
        out = super().step(model, ctx)
        if ctx.step == self.config.at_step:
            if self.config.where == "logits":
                out.logits = out.logits.clone()
                out.logits[0, 0, 0] = float("nan")
            else:
                out.features = out.features.clone()
                out.features[0, 0, 0] = float("inf")
        return out


@dataclass(frozen=True)
class ExitConfig:
    code: int = 3


class ExitAccel(Vanilla):
    """A plugin that calls sys.exit while sampling."""

    def __init__(self, config: ExitConfig) -> None:
        self.config = config
        self.counts = Counts()

    def num_steps(self, default_steps: int) -> int:
        return default_steps

    def step(self, model, ctx: StepContext) -> StepOutput:
        raise SystemExit(self.config.code)


class Fragile:
    """Raises for every configuration but vanilla."""

    info = MetricInfo("fragile", "", True, "data")

    def compute(self, generated, ctx) -> float:
        if ctx.vanilla is not generated:
            raise RuntimeError("fragile metric broke")
        return 1.0


class NaNMetric:
    info = MetricInfo("nan_metric", "", True, "data")

    def compute(self, generated, ctx) -> float:
        return float("nan")


class NeedsTwo:
    info = MetricInfo("needs_two", "", True, "data")
    min_images = 2

    def compute(self, generated, ctx) -> float:
        return 0.0


def _missing_weights(model):
    raise FileNotFoundError("metric weights /nonexistent/w.pth not found")


class FaultPlugin:
    @hookimpl
    def register_accelerators(self, register):
        register(AcceleratorSpec(name="nan", config_cls=NaNConfig, factory=NaNAccel))
        register(AcceleratorSpec(name="exit", config_cls=ExitConfig, factory=ExitAccel))

    @hookimpl
    def register_metrics(self, register):
        register(MetricSpec(info=Fragile.info, factory=lambda m: Fragile(), default=False))
        register(MetricSpec(info=NaNMetric.info, factory=lambda m: NaNMetric(), default=False))
        register(MetricSpec(info=NeedsTwo.info, factory=lambda m: NeedsTwo(), default=False))
        register(
            MetricSpec(
                info=MetricInfo("weightless", "", True, "data"), factory=_missing_weights, default=False
            )
        )


@pytest.fixture
def faulty(manager):
    manager.register(FaultPlugin())
    manager.register(bench.metric_hooks)  # psnr / token agreement / ... against vanilla
    manager.register(base_models.fashion.hooks)  # loads MaskGIT weights from files
    import accelerators.shortcut.hooks

    manager.register(accelerators.shortcut.hooks)
    return manager


@pytest.fixture
def cli_manager(faulty, default_manager):
    return faulty


def sweep(tmp_path: Path, accelerators: list[str], **kw) -> Sweep:
    settings = {"model": TINY_MODEL, "accelerators": accelerators, "images": 2, "batch_size": 2, "replicates": 1,
                "warmup": 0, "out": str(tmp_path), "name": "run", "device": "cpu", "metrics": []}  # fmt: skip
    settings.update(kw)
    return Sweep(**settings)


def run(s: Sweep, manager) -> Path:
    return run_sweep(s, manager=manager, command=["test"], progress=False)


def row(run_dir: Path, accelerator: str) -> dict:
    s = RunStore(run_dir).summary()
    return s[s.accelerator == accelerator].iloc[0].to_dict()


def tiny_weight_files(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The tiny MaskGIT as shipped-style safetensors (transformer, tokenizer)."""
    from base_models.fashion.training import ship_weights
    from base_models.maskgit.testing import tiny_maskgit

    m = tiny_maskgit(seed)
    t, v = folder / "transformer.safetensors", folder / "tokenizer.safetensors"
    ship_weights(t, m.transformer, {"kind": "maskgit-transformer", "config": m.transformer.cfg.to_dict()})
    ship_weights(v, m.vqgan, {"kind": "vqgan", "config": m.vqgan.cfg.to_dict()})
    return t, v


def perturb_safetensors(path: Path) -> None:
    """Replace ``path`` by a valid file of the same kind with one weight changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    name = min(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, str(path), metadata=meta)


def flip_tensor_bytes(path: Path, count: int = 3) -> None:
    """Flip ``count`` bytes in the tensor data (after the safetensors header)."""
    data = bytearray(path.read_bytes())
    header = 8 + struct.unpack("<Q", data[:8])[0]
    for i in range(count):
        data[header + 17 + 101 * i] ^= 0xFF
    path.write_bytes(bytes(data))


# ============================================================ item 1: failed reference
def test_item1_failed_reference_gives_no_vanilla_metrics_and_rows_are_redone(faulty, tmp_path, monkeypatch):
    real_step = Vanilla.step

    def vanilla_fails(self, model, ctx):  # only the reference itself; few-step reuses Vanilla.step
        if type(self) is Vanilla:
            raise RuntimeError("reference broke")
        return real_step(self, model, ctx)

    monkeypatch.setattr(accelerators.vanilla.Vanilla, "step", vanilla_fails)
    metrics = ["token_agreement", "psnr_vs_vanilla", "ssim_vs_vanilla", "feature_cosine", "mean_pixel"]
    s = sweep(tmp_path, ["few-step:steps=6"], metrics=metrics)  # N = vanilla's: identical tokens
    run_dir = run(s, faulty)
    few = row(run_dir, "few-step")
    assert row(run_dir, "vanilla")["status"] == "failed"
    assert few["status"] == "partial"  # not ok: compared against nothing
    for m in ["token_agreement", "psnr_vs_vanilla", "ssim_vs_vanilla", "feature_cosine", "speedup"]:
        assert pd.isna(few.get(m)), m
    missing = json.loads(few["metric_errors"])
    assert "no successful vanilla reference" in missing["token_agreement"]
    assert few["mean_pixel"] == few["mean_pixel"] and few["latency_s_median"] > 0  # kept
    m = RunStore(run_dir).measurements()
    assert not m.metric.isin(["token_agreement", "psnr_vs_vanilla"]).any()

    # the reference succeeds on retry: rows measured without it are redone against it
    monkeypatch.setattr(accelerators.vanilla.Vanilla, "step", real_step)
    run(dataclasses.replace(s, retry_failed=True), faulty)
    few = row(run_dir, "few-step")
    assert row(run_dir, "vanilla")["status"] == "ok" and few["status"] == "ok"
    assert few["token_agreement"] == 1.0 and few["speedup"] > 0 and pd.isna(few["metric_errors"])
    m = RunStore(run_dir).measurements()
    assert not m.duplicated(["accelerator", "config_tag", "metric", "replicate"]).any()


# ============================================================ item 2: changed weights
def test_item2_resume_refuses_changed_base_model_weights(faulty, tmp_path):
    t, v = tiny_weight_files(tmp_path)
    model = f"fashion:transformer={t},tokenizer={v},steps=6"
    s = sweep(tmp_path / "runs", ["few-step:steps=3"], model=model)
    run_dir = run(s, faulty)
    before = (run_dir / "run.json").read_text(), (run_dir / "summary.csv").read_text()
    for changed in (t, v):  # the transformer, then the tokenizer
        saved = changed.read_bytes()
        perturb_safetensors(changed)
        with pytest.raises(SweepError, match="fingerprint"):
            run(dataclasses.replace(s, accelerators=["few-step:steps=3", "few-step:steps=2"]), faulty)
        assert ((run_dir / "run.json").read_text(), (run_dir / "summary.csv").read_text()) == before
        changed.write_bytes(saved)
    run(
        dataclasses.replace(s, accelerators=["few-step:steps=3", "few-step:steps=2"]), faulty
    )  # same weights: fine
    assert len(RunStore(run_dir).summary()) == 3


def test_item2_resume_refuses_changed_shortcut_weights(faulty, tmp_path):
    from accelerators.shortcut.model import ShortcutNet
    from accelerators.shortcut.weights import save_shortcut
    from base_models.maskgit.testing import tiny_maskgit

    weights = tmp_path / "sc.safetensors"
    tiny = tiny_maskgit(0)
    save_shortcut(weights, ShortcutNet.for_model(tiny), tiny, train_steps=6)
    s = sweep(tmp_path / "runs", [f"shortcut:budget=3,weights={weights}"])
    run_dir = run(s, faulty)
    assert row(run_dir, "shortcut")["status"] == "ok"
    perturb_safetensors(weights)
    with pytest.raises(SweepError, match="shortcut.*fingerprint"):
        run(dataclasses.replace(s, accelerators=[*s.accelerators, "few-step:steps=3"]), faulty)


def test_item2_train_base_writes_elsewhere_unless_told_to_ship(tmp_path):
    import argparse

    from base_models.fashion.commands import WEIGHTS, _out_path
    from bench.cli import CLIError

    args = argparse.Namespace(out=None, ship=False)
    assert _out_path(args, tmp_path, "maskgit.safetensors") == tmp_path / "maskgit.safetensors"
    with pytest.raises(CLIError, match="--ship"):
        _out_path(argparse.Namespace(out=str(WEIGHTS / "maskgit.safetensors"), ship=False), tmp_path, "x")
    assert _out_path(argparse.Namespace(out=None, ship=True), tmp_path, "maskgit.safetensors") == (
        WEIGHTS / "maskgit.safetensors"
    )


# ============================================================ item 3: one failing metric
def test_item3_a_failing_metric_keeps_the_rest_of_the_row(faulty, tmp_path):
    run_dir = run(
        sweep(tmp_path, ["few-step:steps=3"], metrics=["fragile", "mean_pixel", "token_agreement"]), faulty
    )
    few = row(run_dir, "few-step")
    assert few["status"] == "partial" and pd.isna(few["error"])
    assert "fragile metric broke" in json.loads(few["metric_errors"])["fragile"]
    assert few["latency_s_median"] > 0 and few["flops_per_image"] > 0 and few["full_forwards"] == 3
    assert 0 <= few["mean_pixel"] <= 1 and 0 <= few["token_agreement"] <= 1 and pd.isna(few["fragile"])
    assert "fragile metric broke" in (run_dir / "errors.log").read_text()
    assert row(run_dir, "vanilla")["status"] == "ok"


@pytest.mark.parametrize(
    "metrics, images, message",
    [(["needs_two"], 1, "needs at least 2 images"), (["weightless"], 2, "weightless cannot run")],
)
def test_item3_metric_preconditions_are_checked_before_sampling(faulty, tmp_path, monkeypatch, metrics, images,
                                                                 message):  # fmt: skip
    def no_sampling(*a, **k):
        raise AssertionError("sampled before checking the metrics")

    monkeypatch.setattr("bench.contestant.sample", no_sampling)
    with pytest.raises(SweepError, match=message):
        run(sweep(tmp_path, ["few-step:steps=3"], metrics=metrics, images=images), faulty)
    assert not any(tmp_path.iterdir())


def test_item3_fid_needs_two_images_up_front():
    assert bench.metrics.FIDMetric.min_images == 2 and bench.metrics.KIDMetric.min_images == 2


# ============================================================ item 4: integrity and numbers
def test_item4_flipped_bytes_in_a_shipped_file_are_refused(tmp_path):
    from base_models.maskgit.checkpoint import load_vqgan_safetensors

    _, v = tiny_weight_files(tmp_path)
    integrity.update(tmp_path)
    load_vqgan_safetensors(v)  # intact: loads
    flip_tensor_bytes(v)
    with pytest.raises(integrity.IntegrityError, match=f"{v}.*contents changed"):
        load_vqgan_safetensors(v)


def test_item4_shortcut_and_classifier_files_are_checked(tmp_path):
    import shutil

    from accelerators.shortcut.weights import ShortcutWeightsError, default_weights_path, read_metadata
    from base_models.fashion.classifier import DEFAULT_WEIGHTS, load_classifier

    SHORTCUT_WEIGHTS = default_weights_path("fashion")

    for src in (SHORTCUT_WEIGHTS, DEFAULT_WEIGHTS):
        folder = tmp_path / src.stem
        folder.mkdir()
        shutil.copy(src, folder / src.name)
        integrity.update(folder)
        flip_tensor_bytes(folder / src.name)
    with pytest.raises(ShortcutWeightsError, match="contents changed"):
        read_metadata(tmp_path / SHORTCUT_WEIGHTS.stem / SHORTCUT_WEIGHTS.name)
    with pytest.raises(integrity.IntegrityError, match="classifier.safetensors"):
        load_classifier(tmp_path / DEFAULT_WEIGHTS.stem / DEFAULT_WEIGHTS.name)


def test_item4_shipped_manifests_match_the_shipped_files():
    """Fails when shipped weights change without `python -m bench.integrity update ...`."""
    root = Path(__file__).resolve().parent.parent
    for folder in ("base_models/fashion/weights", "accelerators/shortcut/weights"):
        listed = integrity.read_manifest(root / folder)
        on_disk = {p.name for p in (root / folder).glob("*.safetensors")}
        assert set(listed) == on_disk, folder
        for name in listed:
            integrity.verify(root / folder / name)


def test_item4_writers_keep_the_manifest_in_step(tmp_path):
    from accelerators.shortcut.model import ShortcutNet
    from accelerators.shortcut.weights import save_shortcut
    from base_models.maskgit.testing import tiny_maskgit

    t, _ = tiny_weight_files(tmp_path)
    integrity.update(tmp_path)
    perturb_safetensors(t)  # replaced outside a writer: refused
    with pytest.raises(integrity.IntegrityError):
        integrity.verify(t)
    tiny_weight_files(tmp_path, seed=1)  # ship_weights updates the manifest
    integrity.verify(t)
    tiny = tiny_maskgit(0)
    save_shortcut(tmp_path / "s.safetensors", ShortcutNet.for_model(tiny), tiny, train_steps=6)
    assert "s.safetensors" in integrity.read_manifest(tmp_path)


@pytest.mark.parametrize("where, step", [("logits", 2), ("features", 4)])
def test_item4_nan_in_logits_or_features_fails_the_row_naming_step_and_accelerator(
    faulty, tmp_path, where, step
):
    run_dir = run(sweep(tmp_path, [f"nan:where={where},at_step={step}"], metrics=["feature_cosine"]), faulty)
    bad = row(run_dir, "nan")
    assert bad["status"] == "failed"
    assert f"NaN/inf in the {where} of step {step}" in bad["error"] and "nan:" in bad["error"]
    assert not (RunStore(run_dir).measurements().accelerator == "nan").any()


def test_item4_nan_metric_value_is_a_failed_metric_not_ok(faulty, tmp_path):
    run_dir = run(sweep(tmp_path, [], metrics=["nan_metric", "mean_pixel"]), faulty)
    van = row(run_dir, "vanilla")
    assert van["status"] == "partial" and "returned nan" in json.loads(van["metric_errors"])["nan_metric"]
    m = RunStore(run_dir).measurements()
    assert m.value.notna().all() and "nan_metric" not in set(m.metric)
    from bench.plots import report_markdown

    line = next(x for x in report_markdown(run_dir).splitlines() if x.startswith("| vanilla"))
    assert "partial" in line and "returned nan" in line  # not shown like a missing value


# ============================================================ item 5: names and folders
@pytest.mark.parametrize("name", ["..", ".", "a/b", "../escape", "/abs/path", "a\\b", ""])
def test_item5_run_name_is_one_path_component(faulty, tmp_path, name):
    with pytest.raises(SweepError, match="run name"):
        run(sweep(tmp_path / "out", [], name=name), faulty)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_item5_derived_names_are_flattened(faulty, tmp_path):
    s = sweep(tmp_path, [], name=None, model="maskgit:config=tiny,checkpoint=/etc/../x/y.pth")
    name = Runner(s, manager=faulty, progress=False).run_name("maskgit")
    assert check_run_name(name) == name and "/" not in name and not name.startswith(".")
    assert "/" not in flatten_name("../../x") and check_run_name(flatten_name(".."))


def test_item5_a_folder_that_is_not_a_run_folder_is_never_written(faulty, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "measurements.csv").write_text("my,own\n1,2\n")
    with pytest.raises(SweepError, match="not a migm-bench run folder"):
        run(sweep(tmp_path, []), faulty)
    assert sorted(p.name for p in folder.iterdir()) == ["measurements.csv"]
    assert (folder / "measurements.csv").read_text() == "my,own\n1,2\n"


# ============================================================ item 6: no code from data
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "evil": _Evil(marker)}, path)
    return path


def test_item6_a_crafted_pth_does_not_run_code(tmp_path):
    from base_models.maskgit.checkpoint import CheckpointError, load_maskgit_pth, load_vqgan_ckpt
    from bench.training import load_checkpoint

    marker = tmp_path / "pwned"
    evil = _crafted(tmp_path / "evil.pth", marker)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_maskgit_pth(evil)
    with pytest.raises(CheckpointError):
        load_vqgan_ckpt(evil)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(evil, {})
    assert not marker.exists()


def test_item6_a_crafted_vanilla_outputs_file_is_regenerated_not_run(faulty, tmp_path):
    marker = tmp_path / "pwned"
    s = sweep(tmp_path, ["few-step:steps=3"], metrics=["token_agreement"])
    run_dir = run(s, faulty)
    _crafted(run_dir / "vanilla_outputs.pt", marker)
    run(dataclasses.replace(s, accelerators=["few-step:steps=3", "few-step:steps=6"]), faulty)
    assert not marker.exists()
    assert row(run_dir, "few-step").get("status") == "ok"
    s6 = RunStore(run_dir).summary().set_index("config_tag").loc["steps=6"]
    assert s6.status == "ok" and s6.token_agreement == 1.0  # paired with the regenerated reference


def test_item6_every_torch_load_is_weights_only():
    root = Path(__file__).resolve().parent.parent
    calls = []
    for path in [
        *root.glob("bench/**/*.py"),
        *root.glob("accelerators/**/*.py"),
        *root.glob("base_models/**/*.py"),
    ]:
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                calls.append((path.name, line.strip()))
    assert calls and all("weights_only=True" in line for _, line in calls), calls


# ============================================================ item 7: one clean line, exit 2
def _yaml(tmp_path: Path, text: str | bytes, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _weights(tmp_path: Path, kind: str) -> str:
    t, v = tiny_weight_files(tmp_path)
    if kind == "missing":
        return f"fashion:transformer={tmp_path / 'nope.safetensors'},tokenizer={v}"
    if kind == "truncated":
        t.write_bytes(t.read_bytes()[: t.stat().st_size // 2])
    elif kind == "garbage":
        t.write_bytes(os.urandom(4096))
    elif kind == "wrong-kind":
        t.write_bytes(v.read_bytes())  # a tokenizer where the transformer belongs
    elif kind == "empty":
        t.write_bytes(b"")
    return f"fashion:transformer={t},tokenizer={v}"


def _corrupt_run(tmp_path: Path, which: str) -> None:
    run_dir = tmp_path / "out" / "r"
    assert main(["run", "--model", TINY_MODEL, "--accel", "few-step:steps=3", "--metrics", "", "--out",
                 str(tmp_path / "out"), "--name", "r", *SMALL]) == 0  # fmt: skip
    path = run_dir / which
    path.write_bytes(b"\x00\xff garbage" if which != "summary.csv" else b"no,columns\n1,2\n")


BIG = "model: " + "x" * (1 << 20) + "\n"
LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)

# (id, argv builder(tmp_path) -> argv, message fragment)
BAD_INPUTS = [
    ("weights-missing", lambda p: ["run", "--model", _weights(p, "missing")], "nope.safetensors"),
    ("weights-truncated", lambda p: ["run", "--model", _weights(p, "truncated")], "transformer.safetensors"),
    ("weights-garbage", lambda p: ["run", "--model", _weights(p, "garbage")], "transformer.safetensors"),
    (
        "weights-wrong-kind",
        lambda p: ["run", "--model", _weights(p, "wrong-kind")],
        "expected 'maskgit-transformer'",
    ),
    ("weights-empty", lambda p: ["run", "--model", _weights(p, "empty")], "transformer.safetensors"),
    ("out-is-a-file", lambda p: ["run", "--out", _yaml(p, "x", "file")], "cannot write the run folder"),
    ("out-impossible", lambda p: ["run", "--out", "/proc/migm-bench-cannot"], "cannot write the run folder"),
    ("name-dotdot", lambda p: ["run", "--name", ".."], "single folder name"),
    ("name-slash", lambda p: ["run", "--name", "a/b"], "single folder name"),
    ("name-absolute", lambda p: ["run", "--name", "/tmp/x"], "single folder name"),
    (
        "corrupt-summary",
        lambda p: _corrupt_run(p, "summary.csv") or ["run", "--name", "r", "--metrics", ""],
        "summary.csv is corrupt",
    ),
    (
        "corrupt-parquet",
        lambda p: _corrupt_run(p, "measurements.parquet") or ["run", "--name", "r", "--metrics", ""],
        "measurements.parquet is corrupt",
    ),
    (
        "corrupt-run-json",
        lambda p: _corrupt_run(p, "run.json") or ["run", "--name", "r"],
        "run.json is corrupt",
    ),
    (
        "report-corrupt-summary",
        lambda p: _corrupt_run(p, "summary.csv") or ["report", str(p / "out" / "r")],
        "summary.csv is corrupt",
    ),
    (
        "report-corrupt-parquet",
        lambda p: _corrupt_run(p, "measurements.parquet") or ["plot", str(p / "out" / "r")],
        "measurements.parquet is corrupt",
    ),
    (
        "yaml-images-str",
        lambda p: ["run", "--config", _yaml(p, "images: ten\n")],
        "images must be an integer",
    ),
    (
        "yaml-images-bool",
        lambda p: ["run", "--config", _yaml(p, "images: true\n")],
        "images must be an integer",
    ),
    ("yaml-accel-int", lambda p: ["run", "--config", _yaml(p, "accelerators: 5\n")], "list of strings"),
    ("yaml-model-list", lambda p: ["run", "--config", _yaml(p, "model: [1, 2]\n")], "model must be a string"),
    ("yaml-metrics-map", lambda p: ["run", "--config", _yaml(p, "metrics: {a: 1}\n")], "list of strings"),
    ("yaml-flag-str", lambda p: ["run", "--config", _yaml(p, "retry_failed: maybe\n")], "true or false"),
    ("yaml-binary", lambda p: ["run", "--config", _yaml(p, bytes(range(256)) * 4)], "not UTF-8 text"),
    ("yaml-nul", lambda p: ["run", "--config", _yaml(p, b"model: a\x00b\n")], "NUL"),
    ("yaml-oversized", lambda p: ["run", "--config", _yaml(p, BIG)], "larger than"),
    ("yaml-recursive", lambda p: ["run", "--config", _yaml(p, "accelerators: &a [*a]\n")], "aliases"),
    ("yaml-billion-laughs", lambda p: ["run", "--config", _yaml(p, LAUGHS)], "aliases"),
    (
        "yaml-deep",
        lambda p: ["run", "--config", _yaml(p, "a: " + "[" * 5000 + "]" * 5000 + "\n")],
        "sweep file",
    ),
    (
        "yaml-duplicate-key",
        lambda p: ["run", "--config", _yaml(p, "images: 2\nimages: 3\n")],
        "duplicate key",
    ),
    (
        "yaml-duplicate-spelling",
        lambda p: ["run", "--config", _yaml(p, "batch_size: 2\nbatch-size: 3\n")],
        "repeats",
    ),
    ("yaml-list", lambda p: ["run", "--config", _yaml(p, "- a\n- b\n")], "must be a mapping"),
    ("yaml-invalid", lambda p: ["run", "--config", _yaml(p, "a: [\n")], "not valid YAML"),
    ("spec-duplicate-key", lambda p: ["run", "--accel", "few-step:steps=3,steps=4"], "given twice"),
    ("model-duplicate-key", lambda p: ["run", "--model", "maskgit:seed=1,seed=2"], "given twice"),
    ("accel-steps-0", lambda p: ["run", "--accel", "few-step:steps=0"], "few-step:steps=0"),
    ("accel-budget-neg", lambda p: ["run", "--accel", "shortcut:budget=-1"], "budget"),
    ("accel-steps-nonint", lambda p: ["run", "--accel", "few-step:steps=2.5"], "not an integer"),
    (
        "metric-too-few-images",
        lambda p: ["run", "--metrics", "needs_two", "--images", "1"],
        "at least 2 images",
    ),
    ("metric-weights-missing", lambda p: ["run", "--metrics", "weightless"], "weightless cannot run"),
    ("foreign-folder", lambda p: _foreign(p) or ["run", "--name", "mine"], "not a migm-bench run folder"),
]


def _flipped_shortcut(tmp_path: Path) -> Path:
    from accelerators.shortcut.model import ShortcutNet
    from accelerators.shortcut.weights import save_shortcut
    from base_models.maskgit.testing import tiny_maskgit

    folder = tmp_path / "sc"
    folder.mkdir()
    tiny = tiny_maskgit(0)
    save_shortcut(folder / "sc.safetensors", ShortcutNet.for_model(tiny), tiny, train_steps=6)
    integrity.update(folder)
    flip_tensor_bytes(folder / "sc.safetensors")
    return folder / "sc.safetensors"


def _foreign(tmp_path: Path) -> None:
    (tmp_path / "out" / "mine").mkdir(parents=True)
    (tmp_path / "out" / "mine" / "measurements.csv").write_text("precious\n")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("build, message", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_item7_bad_inputs_give_one_clean_line_exit_2_and_lose_nothing(
    cli_manager, tmp_path, capsys, build, message
):
    argv = build(tmp_path)
    capsys.readouterr()
    out = tmp_path / "out"
    before = _snapshot(out) if out.exists() else {}
    if argv[0] == "run":
        if "--model" not in argv and "--config" not in argv:
            argv += ["--model", TINY_MODEL]
        if "--accel" not in argv and "--config" not in argv:
            argv += ["--accel", "few-step:steps=3"]
        if "--out" not in argv:
            argv += ["--out", str(out)]
        if "--name" not in argv:
            argv += ["--name", "new"]
        for i, flag in enumerate(SMALL):
            if flag.startswith("--") and flag not in argv:
                has_value = i + 1 < len(SMALL) and not SMALL[i + 1].startswith("--")
                argv += [flag, SMALL[i + 1]] if has_value else [flag]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("migm-bench: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert not (out / "new").exists()  # no empty run folder left behind
    after = _snapshot(out) if out.exists() else {}
    assert after == before  # nothing lost, nothing changed


def test_item7_corrupt_stored_reference_is_regenerated_not_fatal(cli_manager, tmp_path, capsys):
    argv = ["run", "--model", TINY_MODEL, "--metrics", "token_agreement", "--out", str(tmp_path), "--name", "r",
            *SMALL]  # fmt: skip
    assert main([*argv, "--accel", "few-step:steps=3"]) == 0
    (tmp_path / "r" / "vanilla_outputs.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main([*argv, "--accel", "few-step:steps=3", "--accel", "few-step:steps=6"]) == 0
    assert "regenerating vanilla outputs" in capsys.readouterr().err
    s = pd.read_csv(tmp_path / "r" / "summary.csv").set_index("config_tag")
    assert s.loc["steps=6", "token_agreement"] == 1.0 and s.loc["steps=6", "status"] == "ok"


def test_item7_ctrl_c_prints_how_to_resume_and_exits_130(cli_manager, tmp_path, capsys):
    bench_test_plugin.INTERRUPT["armed"] = True
    argv = [
        "run",
        "--model",
        TINY_MODEL,
        "--accel",
        "interrupt",
        "--metrics",
        "",
        "--out",
        str(tmp_path),
        *SMALL,
    ]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rerun the same command to resume" in err and "Traceback" not in err
    bench_test_plugin.INTERRUPT["armed"] = False
    assert main(argv) == 0  # resumes
    assert set(pd.read_csv(next(tmp_path.iterdir()) / "summary.csv").status) == {"ok"}


def test_item8_configurations_that_do_not_fit_the_model_fail_without_sampling(faulty, tmp_path, monkeypatch):
    specs = [
        "few-step:steps=999",
        f"shortcut:budget=3,weights={_flipped_shortcut(tmp_path)}",
        "few-step:steps=3",
    ]
    run_dir = run(sweep(tmp_path / "out", specs), faulty)
    s = RunStore(run_dir).summary().set_index("config_tag")
    assert "cannot exceed the number of tokens" in s.loc["steps=999", "error"]
    shortcut = s[s.accelerator == "shortcut"].iloc[0]
    assert (
        shortcut.status == "failed"
        and "contents changed" in shortcut.error
        and "sc.safetensors" in shortcut.error
    )
    assert s.loc["steps=3", "status"] == "ok" and s.loc["default", "status"] == "ok"


def test_item7_a_plugin_calling_sys_exit_fails_its_configuration_only(faulty, tmp_path):
    run_dir = run(sweep(tmp_path, ["exit:code=3", "few-step:steps=3"]), faulty)
    assert row(run_dir, "exit")["status"] == "failed" and "sys.exit(3)" in row(run_dir, "exit")["error"]
    assert row(run_dir, "few-step")["status"] == "ok"


# ============================================================ item 8: validation up front
@pytest.mark.parametrize(
    "spec", ["few-step:steps=0", "shortcut:budget=-1", "shortcut:steps=-2", "nan:at_step=x"]
)
def test_item8_invalid_configurations_are_refused_before_vanilla_runs(faulty, tmp_path, monkeypatch, spec):
    def no_sampling(*a, **k):
        raise AssertionError("vanilla ran before the configurations were checked")

    monkeypatch.setattr("bench.contestant.sample", no_sampling)
    with pytest.raises(SweepError, match="--accel"):
        run(sweep(tmp_path, ["few-step:steps=3", spec]), faulty)
    assert not any(tmp_path.iterdir())


def test_item8_exit_status_reflects_this_run_only(cli_manager, tmp_path, capsys):
    argv = ["run", "--model", TINY_MODEL, "--accel", "boom", "--metrics", "", "--out", str(tmp_path), *SMALL]
    assert main(argv) == 1
    assert main(argv) == 0  # nothing failed in this run; the old failure is only noted
    assert "failed in earlier runs" in capsys.readouterr().err
    assert main([*argv, "--retry-failed"]) == 1
