"""``migm-bench check NAME``: the contract checks of ``bench.contract`` on one installed plugin.

NAME is an accelerator or a base model, optionally with options (``shortcut:budget=4``,
``maskgit:config=tiny``). An accelerator runs every configuration of its default sweep (or
just the one given) on a base model (``--model``, default: the default base model, whose
shipped weights learned accelerators such as the shortcut have), with and without
classifier-free guidance; a base model runs the base-model checks. One line per check:
``ok``, ``FAIL`` with the reason, or ``skip`` when a weights file the configuration needs
does not exist for that base model (``FileNotFoundError``). Exit status 1 when a check fails
or none ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.config import UnknownNameError, build_config, config_tag, parse_spec, suggest

if TYPE_CHECKING:  # the checks import torch when they run, so `migm-bench --help` does not
    from bench.plugins import PluginManager
    from bench.protocol import BaseModel, SamplingSettings


@dataclass(frozen=True)
class CheckResult:
    """status: "ok", "FAIL" or "skip"; what: which check on what; detail: the reason or a note.
    sampled: the check ran the model (a run where only checks without the model pass checked
    nothing that matters)."""

    status: str
    what: str
    detail: str = ""
    sampled: bool = True

    def line(self) -> str:
        return f"{self.status:<4}  {self.what}" + (f": {self.detail}" if self.detail else "")


def run_one(what: str, check: Callable[[], str | None]) -> CheckResult:
    """Run one check: ok (with its note), FAIL (a broken contract, or any error the plugin
    raised) or skip (a weights file is missing)."""
    from bench.contract import ContractError

    try:
        note = check()
    except FileNotFoundError as err:
        return CheckResult("skip", what, f"needs a file that does not exist here ({err})")
    except ContractError as err:
        return CheckResult("FAIL", what, " ".join(str(err).split()))
    except Exception as err:  # noqa: BLE001 (whatever the plugin raised is the reason it fails)
        return CheckResult("FAIL", what, f"{type(err).__name__}: {' '.join(str(err).split())}")
    return CheckResult("ok", what, note or "")


# ------------------------------------------------------------------ accelerators
def sampling_variants(model: BaseModel, steps: int | None) -> dict[str, SamplingSettings]:
    """The model's default sampling at the reference N (``steps``, None: the model's), with
    classifier-free guidance (its weight, or 2 if it has none) and without."""
    base = model.default_sampling
    base = dataclasses.replace(base, steps=steps or base.steps)
    return {
        "cfg": dataclasses.replace(base, cfg_weight=base.cfg_weight or 2.0),
        "nocfg": dataclasses.replace(base, cfg_weight=0.0),
    }


def accelerator_checks(
    manager: PluginManager, spec: str, model: BaseModel, steps: int | None = None
) -> Iterator[CheckResult]:
    """Every contract check of accelerator ``spec`` (its default sweep unless options are
    given) on ``model``, with and without guidance."""
    from bench import contract

    name, options = parse_spec(spec)
    acc = manager.get_accelerator(name)
    sweep = [options] if options else list(acc.default_sweep or ({},))

    def build_with(opts: dict[str, Any]) -> Any:
        return acc.factory(build_config(acc.config_cls, opts, owner=f"accelerator {name!r}"))

    steps_zero = run_one(f"{name}: steps=0 means the model's default N",
                         lambda: contract.check_steps_zero_is_the_default(build_with))  # fmt: skip
    yield dataclasses.replace(steps_zero, sampled=False)
    for opts in sweep:
        try:
            tag = config_tag(build_config(acc.config_cls, opts, owner=f"accelerator {name!r}"))
        except (UnknownNameError, ValueError, TypeError) as err:
            yield CheckResult("FAIL", f"{name}:{opts}", f"the configuration does not build: {err}")
            continue
        for label, settings in sampling_variants(model, steps).items():
            where = f"{name}:{tag} {label}"

            def build(opts: dict[str, Any] = opts) -> Any:
                return build_with(opts)

            yield from _accelerator_run_checks(where, model, build, settings)


def _accelerator_run_checks(
    where: str, model: BaseModel, build: Callable[[], Any], settings: SamplingSettings
):
    from bench import contract

    checks = {
        "same seed gives identical tokens": lambda: contract.check_same_seed_gives_identical_tokens(
            model, build, settings
        ),
        "reset makes runs repeatable": lambda: contract.check_reset_makes_runs_repeatable(
            model, build, settings
        ),
        # vanilla does one full forward per step at the reference N
        "counts are sane": lambda: contract.check_counts_are_sane(model, build, settings, settings.steps),
        "finite logits and valid tokens": lambda: contract.check_finite_logits_and_valid_tokens(
            model, build, settings
        ),
    }
    for label, check in checks.items():
        yield run_one(f"{where}: {label}", check)


# ------------------------------------------------------------------- base models
def base_model_checks(spec: str, model: BaseModel) -> Iterator[CheckResult]:
    """The base-model contract (``bench.contract.BASE_MODEL_CHECKS``) on ``model``."""
    from bench import contract

    for label, check in contract.BASE_MODEL_CHECKS:
        yield run_one(f"{spec}: {label}", lambda check=check: check(model))


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser, default_model: str) -> argparse.ArgumentParser:
    parser.add_argument(
        "name",
        metavar="NAME",
        help="an accelerator or base model, optionally with options (shortcut:budget=4 checks that "
        "configuration only; default: the whole default sweep)",
    )
    parser.add_argument(
        "--model",
        default=default_model,
        help=f"base model to check an accelerator on (default {default_model!r})",
    )
    parser.add_argument("--steps", type=int, help="reference N (default: the base model's default N)")
    parser.add_argument("--device", default="cpu", help="device to check on (default cpu)")
    return parser


def cmd_check(args: argparse.Namespace, manager: PluginManager) -> int:
    name, _ = parse_spec(args.name)
    is_accelerator = name in manager.accelerators()
    is_base_model = name in manager.base_models()
    if not (is_accelerator or is_base_model):
        known = [*manager.accelerators(), *manager.base_models()]
        raise UnknownNameError(f"no accelerator or base model is called {name!r}.{suggest(name, known)}")
    if is_accelerator:
        manager.get_base_model(parse_spec(args.model)[0])  # an unknown --model: exit 2, with suggestions
    start = time.perf_counter()
    results: list[CheckResult] = []

    def report(found: Iterable[CheckResult]) -> None:
        for result in found:
            print(result.line(), flush=True)
            results.append(result)

    import torch

    with torch.no_grad():
        if is_base_model:
            model = _build_model(args.name, args.device, manager, report)
            if model is not None:
                report(base_model_checks(args.name, model))
        if is_accelerator:
            model = _build_model(args.model, args.device, manager, report)
            if model is not None:
                report(accelerator_checks(manager, args.name, model, args.steps))
    return _summary(results, time.perf_counter() - start)


def _build_model(
    spec: str, device: str, manager: PluginManager, report: Callable[[Iterable[CheckResult]], None]
) -> BaseModel | None:
    """The base model ``spec`` on ``device``; None (and a FAIL line) when it does not build."""
    built: list[BaseModel] = []
    result = run_one(f"{spec}: builds", lambda: built.append(manager.make_base_model(spec, device)))
    if result.status != "ok":
        report([result])
    return built[0] if built else None


def _summary(results: list[CheckResult], seconds: float) -> int:
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "FAIL", "skip")}
    print(f"{counts['ok']} ok, {counts['FAIL']} failed, {counts['skip']} skipped in {seconds:.1f} s")
    if counts["FAIL"]:
        return 1
    if not any(r.status == "ok" and r.sampled for r in results):
        print("nothing was checked: every check was skipped (see the reasons above)")
        return 1
    return 0
