"""``migm-bench`` command line (also ``python -m bench``).

    migm-bench ls                                  what is installed, and who provides it
    migm-bench run                                 the default sweep on the default model
    migm-bench run --model maskgit:config=tiny --accel few-step:steps=8 --accel vanilla:steps=6
    migm-bench run --config sweep.yaml --images 16 # YAML first, flags override it
    migm-bench plot results/RUN                    Pareto figures of a run
    migm-bench report results/RUN                  Markdown summary of a run
    migm-bench check shortcut                      the contract checks on an installed plugin

Plugins add sub-commands through the ``register_commands(subparsers)`` hook; ``-p MODULE``
registers an importable module as a plugin for one invocation. Bad names, options or files
print one line (with suggestions) to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import check
from bench.compare import add_noise_check_arguments, noise_check
from bench.config import UnknownNameError
from bench.guards import GuardError
from bench.integrity import IntegrityError
from bench.plugins import PluginError, PluginManager, get_manager
from bench.run_command import (  # noqa: F401 (also the public import path of these names)
    DEFAULT_MODEL,
    DEFAULT_RUN,
    CLIError,
    add_run_arguments,
    cmd_run,
    default_model,
    sweep_from_args,
)

USER_ERRORS = (UnknownNameError, PluginError, CLIError, GuardError, IntegrityError)
# User errors of modules the CLI imports only when a command needs them (they import torch or
# pandas; start-up stays light): module -> error class.
LAZY_USER_ERRORS = {"bench.sweep": "SweepError", "bench.results": "RunCorrupt"}


def user_errors() -> tuple[type[Exception], ...]:
    """``USER_ERRORS`` plus ``LAZY_USER_ERRORS`` of the modules loaded so far."""
    loaded = [getattr(sys.modules[m], cls) for m, cls in LAZY_USER_ERRORS.items() if m in sys.modules]
    return USER_ERRORS + tuple(loaded)


# ------------------------------------------------------------------------- ls
def _table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def cmd_ls(args: argparse.Namespace, manager: PluginManager) -> int:
    lines = ["base models:"]
    lines += _table([[n, f"[{s.provider}]", s.description] for n, s in manager.base_models().items()])
    lines.append("accelerators:")
    lines += _table(
        [
            [n, f"[{s.provider}]", f"default sweep: {len(s.default_sweep)}", s.description]
            for n, s in manager.accelerators().items()
        ]
    )
    lines.append("metrics:")
    rows = []
    for n, s in manager.metrics().items():
        better = "higher" if s.info.higher_is_better else "lower"
        what = f"{s.info.unit}, {better} is better, vs {s.info.reference}" + (
            ", default" if s.default else ""
        )
        reason = s.unavailable()
        if reason:
            what += f"; UNAVAILABLE: {reason}"
            what += " (unless the base model supplies it)" if s.model_check is not None else ""
        rows.append([n, f"[{s.provider}]", what])
    lines += _table(rows)
    if manager.broken:  # entry points that failed to load or register: skipped, with the reason
        lines.append("broken plugins:")
        lines += _table([[name, why] for name, why in manager.broken.items()])
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------- plot / report
def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "summary.csv").exists():
        raise CLIError(f"{run_dir} is not a run directory (no summary.csv)")
    from bench.results import RunCorrupt, RunStore

    store = RunStore(run_dir)  # corrupt result files: one line (RunCorrupt), not a traceback
    store.measurements(), store.read_run_info()
    try:
        import pandas as pd

        if "accelerator" not in pd.read_csv(store.summary_csv).columns:
            raise ValueError("no column accelerator")
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise RunCorrupt(f"{store.summary_csv} is corrupt ({type(err).__name__}: {err})") from None
    return run_dir


def cmd_plot(args: argparse.Namespace, manager: PluginManager) -> int:
    from bench.plots import plot_run  # lazy: matplotlib only when plotting

    quality = [m.strip() for m in (args.quality or "").split(",") if m.strip()]
    run_dir = _run_dir(args.run_dir)
    written = plot_run(run_dir, quality=quality) if quality else plot_run(run_dir)
    for path in written or []:
        print(path)
    return 0


def cmd_report(args: argparse.Namespace, manager: PluginManager) -> int:
    from bench.plots import report_markdown

    text = report_markdown(_run_dir(args.run_dir))
    if args.output:
        Path(args.output).write_text(text)
        print(args.output)
    else:
        print(text)
    return 0


# ------------------------------------------------------------------- parser
def _machine_noise(args: argparse.Namespace) -> int:
    if not (args.seconds > 0 and args.sample_ms > 0):
        raise CLIError(
            f"machine-noise: --seconds and --sample-ms must be > 0, got {args.seconds} and {args.sample_ms}"
        )
    from bench.machine_noise import run  # torch only when used: start-up stays light

    return run(args)


def build_parser(manager: PluginManager) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="migm-bench", description="Benchmark accelerators of masked image generation models."
    )
    parser.add_argument(
        "-p",
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="register an importable module as a plugin (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def bind(fn: Callable[[argparse.Namespace, PluginManager], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: fn(args, manager)

    p = sub.add_parser("ls", help="list base models, accelerators and metrics with their providers")
    p.set_defaults(func=bind(cmd_ls))

    p = sub.add_parser("run", help="run a sweep (default: vanilla + every accelerator's default sweep)")
    add_run_arguments(p)
    p.set_defaults(func=bind(cmd_run))

    p = sub.add_parser(
        "noise-check",
        help="the default sweep quiet and beside a CPU hog: do the speed-ups agree within 10 %%?",  # %% for argparse
    )
    add_noise_check_arguments(p)
    p.set_defaults(func=bind(noise_check))

    p = sub.add_parser(
        "machine-noise", help="how steadily this machine runs a fixed workload (CV, autocorrelation)"
    )
    p.add_argument("--seconds", type=float, default=30.0, help="how long to sample (default 30)")
    p.add_argument("--sample-ms", type=float, default=60.0, help="length of one sample (default 60 ms)")
    p.set_defaults(func=_machine_noise)

    about = check.__doc__.split("\n\n")[1].replace("\n", " ").replace("``", "")
    p = sub.add_parser("check", help="contract checks of an accelerator or base model", description=about)
    check.add_arguments(p, default_model()).set_defaults(func=bind(check.cmd_check))

    p = sub.add_parser("plot", help="Pareto figures of a run directory")
    p.add_argument("run_dir")
    p.add_argument(
        "--quality",
        metavar="METRICS",
        help="comma-separated metrics on the quality axis, one figure each, e.g. clip_score,image_reward "
        "(default: every quality metric of the run)",
    )
    p.set_defaults(func=bind(cmd_plot))

    p = sub.add_parser("report", help="Markdown report of a run directory")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    p.set_defaults(func=bind(cmd_report))

    manager.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("-p", "--plugin", action="append", default=[])
    early, _ = pre.parse_known_args(argv)
    try:
        manager = get_manager()
        for module in early.plugin:
            try:
                manager.register(importlib.import_module(module))
            except ImportError as err:
                raise CLIError(f"cannot import plugin module {module!r}: {err}") from None
        parser = build_parser(manager)
        args = parser.parse_args(argv)
        args.argv = argv
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `migm-bench ls | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:  # a user error (one line), or a bug (the traceback)
        if not isinstance(err, user_errors()):
            raise
        print(f"migm-bench: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "migm-bench: interrupted; finished configurations are saved, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # python -m bench.cli (same as python -m bench)
    raise SystemExit(main())
