"""``migm-bench run``: the sweep a command line (and an optional YAML sweep file) asks for.

Defaults < YAML file < flags. With no sweep given, ``migm-bench run`` is the default
benchmark (``DEFAULT_RUN``: the default sweep on the default model, results/default).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any

from bench.config import (
    DEFAULT_REFERENCE,
    DEFAULT_SPEEDUP_ESTIMATOR,
    DEFAULT_TIMING_THREADS,
    SPEEDUP_ESTIMATORS,
    suggest,
)
from bench.guards import flatten_name, load_sweep_yaml
from bench.plugins import PluginManager

if TYPE_CHECKING:
    from bench.runner import Sweep
    from bench.specs import BaseModelSpec

# The base model ``migm-bench run`` uses without --model (provided by the lead's plugin);
# the MIGM_BENCH_MODEL environment variable overrides it.
DEFAULT_MODEL = "fashion"
# What a bare `migm-bench run` uses besides the default sweep: 250 images in batches of 25, so
# the default 10 interleaved rounds generate each image once, at one thread (the default of
# --threads: speed-ups that stay put beside other jobs) within the 10-minute budget of a
# 2-core CPU; results in results/default (git-ignored; committed numbers: results/reference-cpu).
DEFAULT_RUN = {"name": "default", "images": 250, "batch_size": 25}
# Flags that change what the default benchmark measures: given any of them without --name,
# the run gets a name derived from its settings, so results/default keeps one sweep.
_SETTING_FLAGS = ("steps", "images", "batch_size", "seed", "replicates", "warmup", "metrics", "limit",
                  "reference", "prompts", "speedup_estimator")  # fmt: skip


def default_model() -> str:
    return os.environ.get("MIGM_BENCH_MODEL", DEFAULT_MODEL)


class CLIError(Exception):
    """A user error reported as one line (exit status 2)."""


# ------------------------------------------------------------------------ run
# YAML keys accepted by ``run --config`` (flag names with '_' or '-').
_YAML_KEYS = (
    "model",
    "accelerators",
    "default_sweep",
    "steps",
    "images",
    "batch_size",
    "seed",
    "metrics",
    "replicates",
    "warmup",
    "name",
    "out",
    "limit",
    "device",
    "keep_features",
    "retry_failed",
    "reference",
    "threads",
    "prompts",
    "speedup_estimator",
)


def _read_yaml(path: str) -> dict[str, Any]:
    data = load_sweep_yaml(path) or {}  # bounded, strict (no aliases, no duplicate keys)
    if not isinstance(data, dict):
        raise CLIError(f"sweep file {path} must be a mapping of options, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        norm = str(key).replace("-", "_")
        norm = "accelerators" if norm in ("accel", "accels") else norm
        norm = "replicates" if norm == "rounds" else norm
        if norm not in _YAML_KEYS:
            raise CLIError(f"sweep file {path}: unknown key {key!r}.{suggest(norm, _YAML_KEYS)}")
        if norm in out:
            raise CLIError(f"sweep file {path}: {key!r} repeats another spelling of {norm!r}")
        out[norm] = value
    for key in ("accelerators", "metrics"):
        if isinstance(out.get(key), str):
            out[key] = [s.strip() for s in out[key].split(";" if key == "accelerators" else ",") if s.strip()]
    for key, value in out.items():
        _check_yaml_type(path, key, value)
    return out


_YAML_TYPES = {"model": str, "name": str, "out": str, "device": str, "keep_features": bool,
               "retry_failed": bool, "default_sweep": bool}  # fmt: skip
_YAML_INTS = ("steps", "images", "batch_size", "seed", "replicates", "warmup", "limit", "threads")


def _check_yaml_type(path: str, key: str, value: Any) -> None:
    """One line naming the key when a sweep-file value has the wrong type."""
    if value is None:
        return
    if key in ("accelerators", "metrics"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        want = "a list of strings"
    elif key in _YAML_INTS:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        typ = _YAML_TYPES.get(key, str)
        ok, want = isinstance(value, typ), "true or false" if typ is bool else "a string"
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CLIError(f"sweep file {path}: {key} must be {want}, got {shown}")


_DEFAULT_RUN_KEYS = ("images", "batch_size", "replicates")


def _model_spec(manager: PluginManager, model: str) -> BaseModelSpec | None:
    """The registered spec of base model spec string ``model`` (None if unknown: it fails later,
    with the manager's own message)."""
    from bench.config import parse_spec

    try:
        return manager.get_base_model(parse_spec(model)[0])
    except (KeyError, ValueError):
        return None


def model_extra_sweep(manager: PluginManager, model: str) -> list[str]:
    """The configurations base model ``model`` adds to the default sweep (``BaseModelSpec.extra_sweep``)."""
    spec = _model_spec(manager, model)
    return list(spec.extra_sweep) if spec is not None else []


def _model_default_run(manager: PluginManager, model: str) -> dict[str, int]:
    """The base model's own default-run settings (``BaseModelSpec.default_run``), checked."""
    spec = _model_spec(manager, model)
    if spec is None:
        return {}
    unknown = set(spec.default_run) - set(_DEFAULT_RUN_KEYS)
    if unknown:
        raise CLIError(f"base model {spec.name!r}: default_run has unknown keys {sorted(unknown)}")
    return dict(spec.default_run)


def sweep_from_args(args: argparse.Namespace, manager: PluginManager) -> Sweep:
    """Defaults < YAML file < flags. No accelerator anywhere: the default sweep."""
    from bench.runner import Sweep, default_sweep_specs

    opts: dict[str, Any] = _read_yaml(args.config) if args.config else {}
    flags = {
        "model": args.model,
        "steps": args.steps,
        "images": args.images,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "replicates": args.replicates,
        "warmup": args.warmup,
        "name": args.name,
        "out": args.out,
        "limit": args.limit,
        "device": args.device,
        "reference": args.reference,
        "threads": args.threads,
        "prompts": args.prompts,
        "speedup_estimator": args.speedup_estimator,
        "metrics": None
        if args.metrics is None
        else [m.strip() for m in args.metrics.split(",") if m.strip()],
    }
    opts.update({k: v for k, v in flags.items() if v is not None})
    if args.accel:
        opts["accelerators"] = list(args.accel)
    if args.retry_failed:
        opts["retry_failed"] = True
    accels = [str(a) for a in (opts.pop("accelerators", None) or [])]
    if not accels and not args.config:
        # `migm-bench run` with no sweep given: the default benchmark (issue: results/default,
        # FID on 250 images), unless the user overrides these keys; a changed setting
        # (e.g. --images 20) runs under a derived name instead of refusing to resume.
        changed = any(flags[k] is not None for k in _SETTING_FLAGS)
        model = opts.get("model") or default_model()
        for key, value in {**DEFAULT_RUN, **_model_default_run(manager, model)}.items():
            if key != "name" or not changed:
                opts.setdefault(key, value)
        if not changed and model and model != default_model() and flags["name"] is None:
            # another model's default benchmark: its own folder, e.g. results/default-fashion-t2i
            opts["name"] = flatten_name(f"{DEFAULT_RUN['name']}-{model}")
    opts.setdefault("model", default_model())
    if opts.pop("default_sweep", False) or args.default_sweep or not accels:
        default = default_sweep_specs(manager, opts.get("reference", DEFAULT_REFERENCE))
        accels = default + model_extra_sweep(manager, opts["model"]) + accels
    fields = {f.name: f for f in dataclasses.fields(Sweep)}
    for key in _YAML_INTS:
        if (
            key in opts
            and opts[key] is not None
            and (not isinstance(opts[key], int) or isinstance(opts[key], bool))
        ):
            raise CLIError(f"{key} must be an integer, got {opts[key]!r}")
    return Sweep(accelerators=accels, **{k: v for k, v in opts.items() if k in fields})


def cmd_run(args: argparse.Namespace, manager: PluginManager) -> int:
    from bench.runner import failed_this_run, run_sweep

    sweep = sweep_from_args(args, manager)
    run_dir = run_sweep(
        sweep, manager=manager, command=["migm-bench", *args.argv], progress=not args.no_progress
    )
    import pandas as pd

    from bench.compare import reference_comparison
    from bench.plots import plot_run, report_markdown  # the table and figures come with every run

    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    print(report_markdown(run_dir))  # latency, speed-ups and every quality metric per configuration
    n_images = sweep.images if sweep.limit is None else min(sweep.images, sweep.limit)
    print(f"quality metrics on {n_images} images per configuration (--images to change)")
    print(f"results: {run_dir}")
    for path in plot_run(run_dir) or []:
        print(f"figure: {path}")
    for line in reference_comparison(run_dir):
        print(line)
    _warn_unstable(summary)
    failed = failed_this_run(run_dir)  # this invocation's failures, not earlier ones
    earlier = int(summary["status"].isin(["failed", "partial"]).sum()) - len(failed)
    if failed:
        print(
            f"{len(failed)} configuration(s) failed; see {run_dir / 'errors.log'} "
            "(rerun with --retry-failed to try them again)",
            file=sys.stderr,
        )
        return 1
    if earlier > 0:
        print(
            f"note: {earlier} configuration(s) failed in earlier runs (--retry-failed to retry them)",
            file=sys.stderr,
        )
    return 0


def _warn_unstable(summary: Any) -> None:
    """One warning naming the configurations whose timing is flagged, and what to do."""
    if "timing" not in summary.columns:
        return
    bad = summary[summary["timing"] == "unstable"]
    if bad.empty:
        return
    why = "; ".join(f"{r.accelerator} {r.config_tag}: {r.timing_note}" for r in bad.itertuples())
    print(
        f"migm-bench: warning: timing unstable for {len(bad)} configuration(s) ({why}). The machine was "
        "busy (see load_avg_start in summary.csv): stop other jobs and rerun under a new --name, or give more "
        "--rounds so the paired medians settle.",
        file=sys.stderr,
    )


def _sweep_default(key: str) -> Any:
    """The default of ``Sweep.<key>``: what `run` uses when neither a flag nor DEFAULT_RUN sets it."""
    from bench.sweep import Sweep  # torch-free: --help stays fast

    return next(f.default for f in dataclasses.fields(Sweep) if f.name == key)


def add_estimator_argument(p: argparse.ArgumentParser, default: str | None) -> None:
    """``--speedup-estimator`` (``bench.stats``); default None: the sweep's (or the YAML file's)."""
    p.add_argument(
        "--speedup-estimator",
        choices=SPEEDUP_ESTIMATORS,
        default=default,
        help=f"speed-up from the paired rounds: median-ratio (the median of per-round ratios) or min (fastest "
        f"round over fastest round, the least disturbed on a shared machine) (default {DEFAULT_SPEEDUP_ESTIMATOR})",
    )


def add_run_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``migm-bench run``; their help states the defaults a bare run really uses."""
    p.add_argument("--config", metavar="YAML", help="sweep file; flags override its keys")
    p.add_argument("--model", help=f"base model spec (default {default_model()!r}, env MIGM_BENCH_MODEL)")
    p.add_argument(
        "--accel",
        action="append",
        metavar="SPEC",
        help="accelerator spec, e.g. few-step:steps=8 (repeatable); replaces the default sweep "
        "(the --reference accelerator always runs too)",
    )
    p.add_argument(
        "--default-sweep", action="store_true", help="also run every registered accelerator's default sweep"
    )
    p.add_argument("--reference", metavar="SPEC", help="accelerator spec that speed-ups and metrics vs vanilla "
                   f"are measured against; it always runs, first (default {DEFAULT_REFERENCE})")  # fmt: skip
    p.add_argument("--steps", type=int, help="reference N (default: the model's default)")
    for key, what in (("images", "images per configuration"), ("batch_size", "images per sampling call")):
        default = f"{DEFAULT_RUN[key]} without --accel/--config (the default run), else {_sweep_default(key)}"
        p.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"{what} (default {default})")
    p.add_argument("--seed", type=int, help=f"base seed (default {_sweep_default('seed')})")
    p.add_argument(
        "--metrics",
        help="comma-separated metric names (default: the base model's own list if it declares one, "
        "else those `ls` marks default; '' for none)",
    )
    p.add_argument(
        "--prompts",
        metavar="SPEC",
        help="text-to-image base models: the prompts, a named set with a selection (parti:category=Animals,"
        "limit=200, geneval:limit=50; `migm-bench prompts` lists them) or a file, one prompt per line; image i "
        "gets prompt i mod their count (default: the model's own prompts)",
    )
    p.add_argument(
        "--rounds",
        "--replicates",
        dest="replicates",
        metavar="ROUNDS",
        type=int,
        help="interleaved timed rounds: each times one batch of every configuration, vanilla included "
        f"(default {_sweep_default('replicates')}; raised to the number of batches so every batch is timed "
        "once; --limit: one per batch)",
    )
    p.add_argument("--warmup", type=int, help=f"untimed warm-up batches (default {_sweep_default('warmup')})")
    add_estimator_argument(p, default=None)
    p.add_argument(
        "--threads",
        type=int,
        help=f"torch intra-op threads while timing (default {DEFAULT_TIMING_THREADS}: speed-ups that stay put "
        "when other jobs share the CPU; 0 = torch's default, one per core)",
    )
    p.add_argument(
        "--name",
        help="run name (default: 'default' without --accel/--config and setting flags, else derived from "
        "the settings, so reruns resume)",
    )
    p.add_argument("--out", help="results root directory (default results)")
    p.add_argument("--limit", type=int, help="smoke run: at most this many images per configuration")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--retry-failed", action="store_true", help="rerun configurations that failed before")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p
