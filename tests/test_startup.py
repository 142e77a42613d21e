"""Start-up stays light: ``--help``, ``report`` and ``plot`` import no torch (issue 11, item 6).

Plugins register specs that name their code lazily (``bench.lazy``) and the CLI imports the
runner only to run sweeps, so these commands skip torch's seconds of import. Each check runs
in a fresh interpreter, since this test process has torch loaded already.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REFERENCE_RUN = Path(__file__).resolve().parent.parent / "results" / "reference-cpu"
CHECK = """
import sys
from bench.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "accelerators.ml_cache", "bench.runner") if m in sys.modules)
assert not heavy, f"imported {heavy}"
sys.exit(status)
"""


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHECK, *argv], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A copy of the committed reference run's result files (plot writes into the run folder)."""
    for name in ("run.json", "summary.csv", "measurements.parquet", "measurements.csv"):
        shutil.copy(REFERENCE_RUN / name, tmp_path / name)
    return tmp_path


def test_help_imports_no_torch():
    proc = _run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "shortcut" in proc.stdout and "report" in proc.stdout


def test_report_and_plot_import_no_torch(run_dir):
    proc = _run_cli("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert "vanilla" in proc.stdout
    proc = _run_cli("plot", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert list(run_dir.glob("plots/*.png"))


def test_deferred_subcommand_loads_its_module_when_used():
    """``shortcut train --help`` imports the train module (its arguments and description)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "shortcut", "train", "--help"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--ratio" in proc.stdout and "--no-cross-attention" in proc.stdout
