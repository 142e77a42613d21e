"""``migm-bench check NAME`` (``bench.check``) and the README's plugin package.

Broken plugins must fail the check that their fault breaks, by name, with a non-zero exit
status; the README's "Write your own accelerator" package is written out of README.md
(so the text cannot rot), loaded through its entry point the way an installed distribution's
is (its ``*.dist-info`` written by setuptools' build backend and put on ``sys.path``, no pip),
and must pass the check.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from accelerators.vanilla import Vanilla, VanillaConfig
from base_models.maskgit.testing import tiny_maskgit
from bench.cli import main
from bench.hookspecs import PROJECT, hookimpl
from bench.protocol import StepContext, StepOutput
from bench.specs import AcceleratorSpec, BaseModelSpec

README = Path(__file__).resolve().parents[1] / "README.md"


# ------------------------------------------------------------------ broken plugins
class WrongShape(Vanilla):
    """Drops the last image position from its logits: (B, P - 1, V)."""

    def step(self, model, ctx: StepContext) -> StepOutput:
        out = super().step(model, ctx)
        return StepOutput(logits=out.logits[:, :-1], features=out.features)


class IgnoresReset(Vanilla):
    """Never resets its counts: they grow over the runs of one instance."""

    def reset(self, model, batch_rows: int) -> None:
        pass


class RemembersRuns(Vanilla):
    """Keeps a run counter across ``reset`` and lets it tilt the logits: seed 0 twice on one
    instance gives other tokens."""

    def __init__(self, config: VanillaConfig) -> None:
        super().__init__(config)
        self.runs = 0

    def reset(self, model, batch_rows: int) -> None:
        super().reset(model, batch_rows)
        self.runs += 1

    def step(self, model, ctx: StepContext) -> StepOutput:
        out = super().step(model, ctx)
        tilt = torch.zeros_like(out.logits)
        tilt[..., self.runs % model.codebook_size] = 50.0  # (B, P, V): one favoured code per run
        return StepOutput(logits=out.logits + tilt, features=out.features)


class IgnoresStepsZero(Vanilla):
    """Reads ``steps=0`` as 4 steps instead of the model's default N."""

    def num_steps(self, default_steps: int) -> int:
        return self.config.steps or 4


def needs_missing_weights(config: VanillaConfig):
    raise FileNotFoundError("no weights for this base model")


@dataclass(frozen=True)
class NoOptions:
    pass


def _head_ignoring_positions(config: NoOptions, device: torch.device):
    """The tiny MaskGIT whose ``head`` reads every subset as the first image positions."""
    model = tiny_maskgit(seed=0).to(device)
    head = model.head

    def first_positions(features, positions=None):
        wrong = None if positions is None else torch.arange(features.shape[1]).expand_as(positions)
        return head(features, wrong)

    model.head = first_positions
    return model


BROKEN = {"wrong-shape": WrongShape, "ignores-reset": IgnoresReset, "remembers-runs": RemembersRuns,
          "ignores-steps-zero": IgnoresStepsZero, "needs-weights": needs_missing_weights}  # fmt: skip


class BrokenPlugins:
    @hookimpl
    def register_accelerators(self, register):
        for name, cls in BROKEN.items():
            register(AcceleratorSpec(name=name, config_cls=VanillaConfig, factory=cls))

    @hookimpl
    def register_base_models(self, register):
        register(BaseModelSpec(name="bad-head", config_cls=NoOptions, factory=_head_ignoring_positions))


@pytest.fixture
def broken(default_manager):
    default_manager.register(BrokenPlugins(), name="broken-plugins")
    return default_manager


def check_lines(capsys, *argv: str) -> tuple[int, list[str]]:
    status = main(["check", *argv])
    return status, capsys.readouterr().out.splitlines()


# ---------------------------------------------------------------------- tests
def test_check_vanilla_passes_every_check(default_manager, capsys):
    status, lines = check_lines(capsys, "vanilla", "--model", TINY_MODEL)
    assert status == 0
    checks = lines[:-1]
    assert len(checks) == 1 + 2 * 4  # steps=0, then four checks with and without guidance
    assert all(line.startswith("ok ") for line in checks), lines
    assert any("vanilla:default nocfg: reset makes runs repeatable" in line for line in checks)
    assert lines[-1].startswith("9 ok, 0 failed, 0 skipped")
    assert torch.is_grad_enabled()  # no global state left behind


def test_check_a_base_model_passes(default_manager, capsys):
    status, lines = check_lines(capsys, TINY_MODEL)
    assert status == 0 and all(line.startswith("ok ") for line in lines[:-1]), lines
    assert any("partial forward equals full forward" in line for line in lines)


@pytest.mark.parametrize(
    "name, failing, reason",
    [
        ("wrong-shape", "finite logits and valid tokens", "logits of shape (4, 15, 16), want (4, 16, 16)"),
        ("ignores-reset", "reset makes runs repeatable", "counts do not restart at reset"),
        ("remembers-runs", "reset makes runs repeatable", "state survives reset"),
        ("ignores-steps-zero", "steps=0 means the model's default N", "num_steps(6) = 4"),
    ],
)
def test_a_broken_accelerator_fails_the_check_it_breaks(broken, capsys, name, failing, reason):
    status, lines = check_lines(capsys, name, "--model", TINY_MODEL)
    assert status == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any(failing in line and reason in line for line in failed), lines
    assert "failed" in lines[-1] and not lines[-1].startswith(f"{len(lines) - 1} ok")


def test_a_broken_base_model_fails_the_partial_forward_check(broken, capsys):
    status, lines = check_lines(capsys, "bad-head")
    assert status == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and "head on a subset of image positions" in failed[0], lines


def test_one_configuration_and_an_unknown_name(default_manager, capsys):
    status, lines = check_lines(capsys, "few-step:steps=3", "--model", TINY_MODEL)
    assert status == 0 and sum("few-step:default" in line or "steps=3" in line for line in lines) == 8, lines
    assert main(["check", "vanila"]) == 2
    assert "Did you mean: vanilla?" in capsys.readouterr().err


def test_every_check_skipped_is_a_failure(broken, capsys):
    status, lines = check_lines(capsys, "needs-weights", "--model", TINY_MODEL)
    assert status == 1 and sum(line.startswith("skip") for line in lines) == 9, lines
    assert "no weights for this base model" in lines[1]
    assert "nothing was checked" in lines[-1]


# ------------------------------------------------------------ the README's package
def readme_package_files() -> dict[str, str]:
    """path -> text of every "Save as `path`:" code block of "Write your own accelerator"."""
    section = README.read_text().split("## Write your own accelerator", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"Save as\s+`([^`]+)`:\s*\n+```\w*\n(.*?)```", section, flags=re.DOTALL))


def write_as_installed(files: dict[str, str], root: Path, monkeypatch) -> Path:
    """Write the package into ``root / "src"`` and have setuptools' own build backend (the PEP 517
    hook ``pip install -e .`` calls; in-process, no pip, no network) write its ``*.dist-info``
    into ``root / "site"``; both go on ``sys.path``, as an editable install puts them. Returns
    the package folder."""
    build_meta = pytest.importorskip("setuptools.build_meta")
    for rel, text in files.items():
        (root / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / rel).write_text(text)
    (package,) = [(root / "src" / rel).parent for rel in files if rel.endswith("pyproject.toml")]
    site = root / "site"
    site.mkdir()
    monkeypatch.chdir(package)
    dist_info = build_meta.prepare_metadata_for_build_editable(str(site))
    for extra in site.glob("*.egg-info"):  # setuptools' by-product: keep one copy of the metadata
        shutil.rmtree(extra)
    assert dist_info.endswith(".dist-info")
    monkeypatch.syspath_prepend(str(package))  # the module
    monkeypatch.syspath_prepend(str(site))  # its metadata, entry points included
    return package


def test_the_readme_plugin_package_passes_the_check(default_manager, tmp_path, monkeypatch, capsys):
    files = readme_package_files()
    assert {Path(p).name for p in files} == {"migm_reuse.py", "pyproject.toml"}
    write_as_installed(files, tmp_path, monkeypatch)
    dist = importlib.metadata.distribution("migm-bench-reuse")
    (entry_point,) = [ep for ep in dist.entry_points if ep.group == PROJECT]
    default_manager.register(entry_point.load(), name=entry_point.name)  # what loading the entry point does
    assert "reuse" in default_manager.accelerators()
    status, lines = check_lines(capsys, "reuse", "--model", TINY_MODEL)
    assert status == 0, lines
    assert sum(line.startswith("ok ") for line in lines) == 1 + 2 * 2 * 4  # two configurations
    assert "pip install -e . && migm-bench ls && migm-bench check reuse" in README.read_text()


# ------------------------------------------------------------ environment variables
def environment_variables_read() -> set[str]:
    """Every variable the package's own code reads: ``MIGM_*`` names anywhere in it, and the
    literal names passed to ``os.environ.get`` / ``os.environ[...]``."""
    found: set[str] = set()
    for folder in ("bench", "accelerators", "base_models", "metrics"):
        for path in (README.parent / folder).rglob("*.py"):
            text = path.read_text()
            found |= set(re.findall(r"[\"'](MIGM_[A-Z0-9_]+)[\"']", text))
            found |= set(re.findall(r"environ(?:\.get\(|\[)\s*[\"']([A-Z0-9_]+)[\"']", text))
    return found


def test_the_readme_documents_every_environment_variable():
    section = README.read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section))
    read = environment_variables_read()
    assert {"MIGM_BENCH_NO_AUTOLOAD", "MIGM_CLIP_WEIGHTS", "RANK"} <= read  # the scan finds them
    assert read <= documented, f"not in the README's environment table: {sorted(read - documented)}"
