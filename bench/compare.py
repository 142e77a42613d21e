"""Speed-ups side by side: a run against the committed reference, and the noise check.

* ``reference_comparison(run_dir, reference_dir)``: after ``migm-bench run``, each
  configuration's speed-up beside the committed reference run's of the same base model and
  N (``results/reference-cpu`` for ``fashion``, ``results/reference-cpu-fashion-t2i`` for the
  text-to-image default: any committed ``results/reference-cpu*`` folder, measured on the
  machine its ``MACHINE.md`` describes).
* ``migm-bench noise-check``: the default sweep twice, once on the machine as it is and once
  with a CPU hog of its own (a subprocess spinning on one core) running beside it; prints
  each configuration's two speed-ups and their relative difference. Interleaved, paired
  timing (``bench.interleave``) should keep them within 10 %.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the CLI imports this module at start-up
    import pandas as pd

from bench.config import DEFAULT_SPEEDUP_ESTIMATOR, DEFAULT_TIMING_THREADS

AGREEMENT = 0.10  # the noise check passes when every speed-up moves less than this under load
RESULTS_ROOT = Path(__file__).resolve().parent.parent / "results"  # committed references live here
REFERENCE_RUN = RESULTS_ROOT / "reference-cpu"  # the default model's


def _summary(run_dir: Path) -> pd.DataFrame:
    import pandas as pd

    df = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    df["config_tag"] = df["config_tag"].astype(str)
    return df[df["status"] == "ok"].set_index(["accelerator", "config_tag"])


def _speedup(row: pd.Series) -> str:
    import pandas as pd

    text = f"{row['speedup']:.2f}x"
    low, high = row.get("speedup_ci_low", math.nan), row.get("speedup_ci_high", math.nan)
    if pd.notna(low) and pd.notna(high):
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def side_by_side(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Configurations in both summaries: speed-up a, speed-up b, relative difference b / a - 1."""
    import pandas as pd

    keys = [k for k in a.index if k in b.index]
    return pd.DataFrame(
        {
            "accelerator": [k[0] for k in keys],
            "config_tag": [k[1] for k in keys],
            "a": [_speedup(a.loc[k]) for k in keys],
            "b": [_speedup(b.loc[k]) for k in keys],
            "difference": [float(b.loc[k, "speedup"] / a.loc[k, "speedup"] - 1) for k in keys],
        }
    )


def _table(rows: pd.DataFrame, a: str, b: str) -> list[str]:
    lines = [f"| accelerator | config | {a} | {b} | difference |", "|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append(
            f"| {r['accelerator']} | {r['config_tag']} | {r['a']} | {r['b']} | {100 * r['difference']:+.1f} % |"
        )
    return lines


def _model_and_steps(run_dir: Path) -> tuple:
    """(model, reference N) of a run folder, from its run.json (None, None if there is none)."""
    from bench.results import RunStore

    c = (RunStore(run_dir).read_run_info() or {}).get("compat", {})
    return c.get("model"), c.get("steps")


def matching_reference(run_dir: Path, candidates: list[Path] | None = None) -> Path | None:
    """The committed reference folder (``results/reference-cpu*``) of the run's base model and N."""
    candidates = sorted(RESULTS_ROOT.glob("reference-cpu*")) if candidates is None else candidates
    wanted = _model_and_steps(Path(run_dir))
    return next(
        (d for d in candidates if (d / "summary.csv").is_file() and _model_and_steps(d) == wanted), None
    )


def reference_comparison(run_dir: Path, reference_dir: Path | None = None) -> list[str]:
    """Lines comparing the run's speed-ups with the committed reference's (default: the one of
    the same model and N, ``matching_reference``; empty when there is none, it is the run
    itself, or it ran another model or reference N)."""
    run_dir = Path(run_dir)
    reference_dir = matching_reference(run_dir) if reference_dir is None else Path(reference_dir)
    if reference_dir is None or not (reference_dir / "summary.csv").is_file():
        return []
    if run_dir.resolve() == reference_dir.resolve():
        return []
    if _model_and_steps(run_dir) != _model_and_steps(reference_dir):
        return []
    rows = side_by_side(_summary(reference_dir), _summary(run_dir))
    if rows.empty:
        return []
    shown = Path(os.path.relpath(reference_dir))  # as the user would type it
    where = (
        f" (measured on the machine {shown / 'MACHINE.md'} describes)"
        if (reference_dir / "MACHINE.md").is_file()
        else ""
    )
    return [
        f"speed-ups beside the committed reference {shown}{where}:",
        *_table(rows, "reference", "this run"),
    ]


# --------------------------------------------------------------------- noise check
@contextmanager
def cpu_hog() -> Iterator[subprocess.Popen]:
    """A subprocess spinning on one core for as long as the block runs."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog
    finally:
        hog.terminate()
        hog.wait(timeout=30)


def noise_check(args: argparse.Namespace, manager) -> int:
    """Run the sweep quiet, then beside a CPU hog; print both speed-ups per configuration."""
    from bench.run_command import model_extra_sweep
    from bench.runner import Sweep, default_sweep_specs, run_sweep

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) / f"noise-check-{stamp}"
    metrics = [] if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    model = args.model or "fashion"
    specs = args.accel or default_sweep_specs(manager) + model_extra_sweep(manager, model)
    runs = {}
    for name in ("quiet", "hog"):
        sweep = Sweep(
            model=model, accelerators=list(specs), images=args.images, batch_size=args.batch_size,
            replicates=args.rounds, metrics=metrics, name=name, out=str(out), device=args.device, threads=args.threads,
            speedup_estimator=args.speedup_estimator,
        )  # fmt: skip
        print(f"noise check: {name} run -> {out / name}", flush=True)
        command = ["migm-bench", "noise-check", name]
        if name == "hog":
            with cpu_hog():
                runs[name] = run_sweep(sweep, manager=manager, command=command, progress=not args.no_progress)
        else:
            runs[name] = run_sweep(sweep, manager=manager, command=command, progress=not args.no_progress)
    rows = side_by_side(_summary(runs["quiet"]), _summary(runs["hog"]))
    for line in _table(rows, "quiet", "with a CPU hog"):
        print(line)
    worst = rows["difference"].abs().max() if len(rows) else math.nan
    within = int((rows["difference"].abs() <= AGREEMENT).sum())
    verdict = "PASS" if within == len(rows) and len(rows) else "FAIL"
    print(f"{verdict}: {within} of {len(rows)} speed-ups agree within {100 * AGREEMENT:.0f} % "
          f"(largest difference {100 * worst:.1f} %; --speedup-estimator {args.speedup_estimator}); "
          f"results in {out}")  # fmt: skip
    for line in estimator_agreement(runs["quiet"], runs["hog"]):
        print(line)
    for line in change_intervals(runs["quiet"], runs["hog"], args.speedup_estimator):
        print(line)
    return 0 if verdict == "PASS" else 1


def paired_latencies(run_dir: Path) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(accelerator, config_tag) -> (reference times, own times) per round, from the run's measurements."""
    from bench.results import RunStore

    m = RunStore(run_dir).measurements()
    m = m[m["metric"].isin(["latency_s_per_image", "vanilla_latency_s_per_image"])]
    out = {}
    for (acc, tag), rows in m.groupby(["accelerator", "config_tag"]):
        wide = rows.pivot_table(index="replicate", columns="metric", values="value").dropna()
        if {"latency_s_per_image", "vanilla_latency_s_per_image"} <= set(wide.columns):
            out[(acc, str(tag))] = (
                wide["vanilla_latency_s_per_image"].tolist(),
                wide["latency_s_per_image"].tolist(),
            )
    return out


def estimator_agreement(quiet: Path, hog: Path) -> list[str]:
    """One line per speed-up estimator (``bench.stats``): how many speed-ups of the two runs
    agree within ``AGREEMENT`` had the run used it, recomputed from the same timed rounds."""
    from bench import stats

    a, b = paired_latencies(quiet), paired_latencies(hog)
    keys = [k for k in a if k in b]
    lines = []
    for name in stats.SPEEDUP_ESTIMATORS:
        diff = [abs(stats.speedup(*b[k], name).value / stats.speedup(*a[k], name).value - 1) for k in keys]
        diff = [d for d in diff if math.isfinite(d)]
        if diff:
            within = sum(d <= AGREEMENT for d in diff)
            lines.append(f"  same rounds, --speedup-estimator {name}: {within} of {len(diff)} within "
                         f"{100 * AGREEMENT:.0f} % (largest {100 * max(diff):.1f} %)")  # fmt: skip
    return lines


def change_intervals(quiet: Path, hog: Path, estimator: str) -> list[str]:
    """How many speed-up moves the timed rounds' own noise explains (``bench.stats.speedup_change``:
    the 95 % interval of hog / quiet - 1 holds 0), and the interval of every move past
    ``AGREEMENT``: a FAIL whose moves all hold 0 is round noise (more --rounds narrow it), one
    whose intervals exclude 0 is the load itself moving the speed-ups."""
    from bench import stats

    a, b = paired_latencies(quiet), paired_latencies(hog)
    changes = {k: stats.speedup_change(a[k], b[k], estimator) for k in a if k in b}
    changes = {k: c for k, c in changes.items() if math.isfinite(c.value)}
    if not changes:
        return []
    noise = sum(c.low <= 0 <= c.high for c in changes.values())
    head = (f"  {noise} of {len(changes)} moves hold 0 in their 95 % interval (hog / quiet - 1, each run's "
            f"rounds resampled; --speedup-estimator {estimator}): round noise explains them")  # fmt: skip
    lines = [head]
    for (acc, tag), c in changes.items():
        if abs(c.value) > AGREEMENT:
            lines.append(f"    {acc} {tag}: {100 * c.value:+.1f} % [{100 * c.low:+.1f}, {100 * c.high:+.1f}]")
    return lines


def add_noise_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="base model spec (default fashion)")
    parser.add_argument(
        "--accel", action="append", metavar="SPEC", help="configurations (default: the default sweep)"
    )
    parser.add_argument(
        "--images", type=int, default=250, help="images per configuration (default 250, as the default run)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=25, help="images per timed batch (default 25, as the default run)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="interleaved timed rounds per run (default 10, as the default run)",
    )
    parser.add_argument(
        "--metrics", default="", help="quality metrics (default none: only timing matters here)"
    )
    parser.add_argument(
        "--out", default="results", help="results root (default results; runs are git-ignored)"
    )
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    from bench.run_command import add_estimator_argument

    add_estimator_argument(parser, default=DEFAULT_SPEEDUP_ESTIMATOR)
    parser.add_argument("--no-progress", action="store_true")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads`` of the timing commands (``bench.config.DEFAULT_TIMING_THREADS``)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_TIMING_THREADS,
        help=f"torch intra-op threads while timing (default {DEFAULT_TIMING_THREADS}; 0 = torch's default)",
    )
