"""Run a sweep: one base model, vanilla + accelerator configurations, paired by seed.

Semantics (every configuration sees exactly the same inputs):

* conditions: drawn once, ``model.conditions(n, torch.Generator().manual_seed(seed))``;
* batch j (images [j*b, (j+1)*b)) samples with a generator seeded ``seed + j``, so image i
  of every configuration has the same condition and sampling seed (outputs paired by seed);
* vanilla at the reference N (``--steps``, default ``model.default_sampling.steps``) is the
  latency reference and the output fidelity metrics compare against it. Its tokens/features
  are saved in the run directory (``vanilla_outputs.pt``).

Timing is interleaved (``bench.interleave``): every configuration still to run *and*
vanilla get an untimed warm-up batch, then ``replicates`` (``--rounds``) rounds each time
one batch of every configuration, in a shuffled order (at least one round per batch, so
every image is generated once). Only ``bench.sampling.sample`` is timed; per-image latency
= batch time / batch size; decoding is timed separately. A configuration's speed-up is the
median over rounds of vanilla's time / its time in the same round, with a bootstrap 95 %
interval (``bench.stats``). Vanilla is re-timed in every invocation that runs anything
(a resumed sweep reuses vanilla's stored outputs for quality, never its stored time), so
every speed-up is against vanilla timed in the same process; each summary row records the
environment of the invocation that timed it (host, torch, threads, device, load average).
Then per configuration: FLOPs per image counted once on a small batch, model-call counts
averaged over batches, peak memory over its batches, the quality metrics on all images
with their bootstrap intervals, and a ``timing`` flag (ok / unstable: batch-time CV or the
realised share of the FLOP saving out of range). A configuration that raises is recorded
as failed (with a one-line error; the traceback goes to ``errors.log``) and the sweep goes
on. Configurations already finished in the run directory are skipped; results are written
after the timed rounds, one configuration at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import platform
import shlex
import subprocess
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench import stats
from bench.config import config_tag
from bench.flops import count_flops
from bench.guards import (
    FiniteTap,
    GuardError,
    NonFiniteError,
    PluginExit,
    check_finite_value,
    check_run_folder,
    check_run_name,
    flatten_name,
    remove_if_unused,
)
from bench.interleave import DEFAULT_ROUNDS, run_rounds
from bench.metrics import metric_interval
from bench.plugins import PluginManager, get_manager
from bench.protocol import (
    AcceleratorWrapper,
    BaseModel,
    GeneratedBatch,
    SamplingSettings,
    StepContext,
    StepOutput,
    condition_prompts,
)
from bench.results import CI_HIGH, CI_LOW, ConfigKey, RunLocked, RunStore, atomic_write
from bench.sampling import reveal_schedule, sample
from bench.specs import AcceleratorSpec, MetricContext, MetricUnavailable, MetricValue
from bench.timing import PeakMemory, cpu_name, device_name, invocation_environment, iqr, median, timed

REFERENCE_ACCELERATOR = "vanilla"
REFERENCE_KEY: ConfigKey = (REFERENCE_ACCELERATOR, "default")
VANILLA_FILE = "vanilla_outputs.pt"
WARMUP_BATCH = 2  # images in each warm-up batch
FLOP_BATCH = 2  # images in the batch whose FLOPs are counted
NO_REFERENCE = "no successful vanilla reference in this run (rerun with --retry-failed once vanilla succeeds)"

# Sweep fields that must match to resume (add to) an existing run.
_COMPAT_FIELDS = (
    "model",
    "steps",
    "seed",
    "images",
    "batch_size",
    "metrics",
    "replicates",
    "warmup",
    "device",
)


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad option value, incompatible resume, ...)."""


@dataclass
class Sweep:
    """What to run.

    model: base model spec, e.g. ``maskgit:config=tiny``.
    accelerators: accelerator spec strings (``few-step:steps=8``); vanilla at the
        reference N is added first if missing.
    steps: reference N (None: the model's ``default_sampling.steps``).
    seed: base seed (conditions; batch j samples with ``seed + j``).
    images / batch_size: images per configuration and per sampling call.
    metrics: metric names (None: every registered metric marked ``default``).
    replicates: timed rounds (``--rounds``): each round times one batch of every
        configuration, vanilla included; at least one round per batch, and batches are
        re-timed (same seeds) when there are fewer batches than rounds. warmup: untimed
        warm-up batches per configuration before the rounds.
    name / out: results go to ``out/name`` (name None: derived from the settings, so
        rerunning the same command resumes the same run).
    device: "cpu", "cuda", "cuda:1", or "auto".
    limit: smoke run: at most ``limit`` images per configuration, no extra timing passes.
    keep_features: keep final-step features for metrics (costs n * L * D floats).
    retry_failed: rerun configurations recorded as failed in an existing run.
    """

    model: str
    accelerators: list[str] = field(default_factory=list)
    steps: int | None = None
    seed: int = 0
    images: int = 64
    batch_size: int = 16
    metrics: list[str] | None = None
    replicates: int = DEFAULT_ROUNDS
    warmup: int = 1
    name: str | None = None
    out: str = "results"
    device: str = "auto"
    limit: int | None = None
    keep_features: bool = True
    retry_failed: bool = False

    def validate(self) -> None:
        for key in ("images", "batch_size", "replicates"):
            if getattr(self, key) < 1:
                raise SweepError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup < 0:
            raise SweepError(f"warmup must be >= 0, got {self.warmup}")
        if self.steps is not None and self.steps < 1:
            raise SweepError(f"steps must be >= 1, got {self.steps}")
        if self.limit is not None and self.limit < 1:
            raise SweepError(f"limit must be >= 1, got {self.limit}")
        if self.name is not None:
            try:
                check_run_name(self.name)
            except GuardError as err:
                raise SweepError(str(err)) from None


@dataclass
class Configuration:
    """One resolved accelerator configuration of the sweep."""

    spec: str
    acc: AcceleratorSpec
    config: Any

    @property
    def key(self) -> ConfigKey:
        return (self.acc.name, config_tag(self.config))


def spec_string(name: str, options: dict[str, Any]) -> str:
    """('few-step', {'steps': 8}) -> 'few-step:steps=8' (tuples joined by '/')."""

    def fmt(v: Any) -> str:
        return "/".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)

    opts = ",".join(f"{k}={fmt(v)}" for k, v in options.items())
    return f"{name}:{opts}" if opts else name


def default_sweep_specs(manager: PluginManager | None = None) -> list[str]:
    """Vanilla + every registered accelerator's ``default_sweep``, as spec strings."""
    manager = manager or get_manager()
    specs = [REFERENCE_ACCELERATOR]
    for name, acc in manager.accelerators().items():
        specs += [spec_string(name, opts) for opts in acc.default_sweep]
    return list(dict.fromkeys(specs))  # vanilla's own default sweep is the reference again


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise SweepError(f"bad --device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"--device {device}: CUDA is not available on this machine")
    return dev


# ------------------------------------------------------------------ feature tap
class _FeatureTap(AcceleratorWrapper):
    """Wraps an accelerator to keep the last step's features (no copy, no extra work)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.last_features: torch.Tensor | None = None
        self.finite = FiniteTap()  # NaN/inf caught at the step where they first appear

    def reset(self, model: BaseModel, batch_rows: int) -> None:
        self.last_features = None
        self.finite.reset()
        super().reset(model, batch_rows)

    def step(self, model: BaseModel, ctx: StepContext) -> StepOutput:
        out = self.inner.step(model, ctx)
        self.finite.watch(ctx.step, out.logits, out.features)  # no host sync here
        self.last_features = out.features  # (B, L, D), conditional stream first
        return out


# ------------------------------------------------------------- one configuration
class _ConfigRun:
    """One configuration's part of the interleaved rounds (a ``bench.interleave.Contestant``):
    its accelerator, every round's per-image latency, and the outputs of the first pass
    over each batch (tokens, decoded images, final features, model-call counts)."""

    def __init__(self, runner: Runner, conf: Configuration, cond: torch.Tensor) -> None:
        self.runner, self.conf, self.cond = runner, conf, cond
        self.key = conf.key
        self.tap: _FeatureTap | None = None
        self.steps: int | None = None
        self.error: Exception | None = None
        self.traceback = ""
        self.latencies: list[float] = []  # per round, seconds per image
        self.batch_of_round: list[int] = []
        self.decode_times: list[float] = []  # per batch, seconds per image
        self.counts: list[dict[str, float]] = []  # per batch
        self.tokens: dict[int, torch.Tensor] = {}  # batch -> (b, P)
        self.images: dict[int, torch.Tensor] = {}  # batch -> (b, C, H, W)
        self.features: dict[int, torch.Tensor] = {}  # batch -> (b, L, D), conditional stream
        self.peak_mb = math.nan

    def prepare(self) -> None:
        try:
            if self.key in self.runner.unfit:  # found before the sweep started: recorded, not sampled
                raise self.runner.unfit[self.key]
            self.tap = _FeatureTap(self.conf.acc.factory(self.conf.config))
            self.steps = self.tap.num_steps(self.runner.settings.steps)
        except (Exception, SystemExit) as err:  # noqa: BLE001 (recorded as a failed configuration)
            self.fail(err)

    def fail(self, err: BaseException) -> None:
        err = self.nonfinite() or err  # NaN/inf at an earlier step is the real cause
        if isinstance(err, SystemExit):
            err = PluginExit(f"a plugin called sys.exit({err.code!r})")
        self.error = err
        self.traceback = "".join(traceback.format_exception(type(err), err, err.__traceback__))

    def nonfinite(self) -> NonFiniteError | None:
        try:
            if self.tap is not None:
                self.tap.finite.check(f"{self.conf.spec} ({self.key[0]})")
        except NonFiniteError as err:
            return err
        return None

    def warmup(self) -> None:
        r = self.runner
        with _no_exit():
            for _ in range(r.sweep.warmup):  # untimed: lazy init, allocator, caches
                sample(r.model, self.tap, self.cond[:WARMUP_BATCH], r._generator(r.sweep.seed), r.settings)

    def generate(self, batch: int) -> Any:
        r = self.runner
        lo, hi = r._batches()[batch]
        with PeakMemory(r.device) as mem, _no_exit():
            result = sample(
                r.model, self.tap, self.cond[lo:hi], r._generator(r.sweep.seed + batch), r.settings
            )
        return result, mem

    def record(self, round_: int, batch: int, seconds: float, result: Any) -> None:
        sampled, mem = result
        r = self.runner
        self.tap.finite.check(f"{self.conf.spec} ({self.key[0]})")  # after the timed call
        lo, hi = r._batches()[batch]
        self.latencies.append(seconds / (hi - lo))
        self.batch_of_round.append(batch)
        self.peak_mb = mem.mb if math.isnan(self.peak_mb) else max(self.peak_mb, mem.mb)
        if batch in self.tokens:  # a later pass over the batch: timing only
            return
        self.counts.append(self.tap.counts.as_dict())
        if r.sweep.keep_features and self.tap.last_features is not None:
            self.features[batch] = self.tap.last_features[: hi - lo].float().cpu()
        with timed(r.device) as watch:
            decoded = r.model.decode(sampled.tokens)  # (b, C, H, W) in [0, 1]
        self.decode_times.append(watch.seconds / (hi - lo))
        self.tokens[batch] = sampled.tokens.cpu()
        self.images[batch] = decoded.cpu()

    def generated(self) -> GeneratedBatch:
        order = sorted(self.tokens)
        return GeneratedBatch(
            images=torch.cat([self.images[j] for j in order]),
            tokens=torch.cat([self.tokens[j] for j in order]),
            cond=self.cond.cpu(),
            features=torch.cat([self.features[j] for j in order])
            if len(self.features) == len(order)
            else None,
            prompts=condition_prompts(self.runner.model, self.cond),
        )


# -------------------------------------------------------------------- the runner
class Runner:
    """Runs one ``Sweep``. ``run()`` returns the run directory."""

    def __init__(
        self,
        sweep: Sweep,
        manager: PluginManager | None = None,
        command: list[str] | None = None,
        progress: bool = True,
    ) -> None:
        sweep.validate()
        self.sweep = sweep
        self.manager = manager or get_manager()
        self.command = command if command is not None else list(sys.argv)
        self.progress = progress
        self.device = resolve_device(sweep.device)

        # Resolve every name and option before building anything: bad input fails fast.
        self.model_spec, self.model_config = self._resolve_model()
        self.configurations = self._resolve_configurations()
        names = sweep.metrics if sweep.metrics is not None else self.manager.default_metrics()
        self.metric_names = list(dict.fromkeys(names))  # in order, once each
        for name in self.metric_names:
            reason = self.manager.get_metric(name).unavailable()  # unknown names raise with suggestions
            if reason:  # e.g. a weights file not given: fail now, not after generating
                raise SweepError(f"metric {name!r} is unavailable: {reason}")

        self.n = min(sweep.images, sweep.limit) if sweep.limit else sweep.images
        self.batch_size = min(sweep.batch_size, self.n)
        self.replicates = 1 if sweep.limit else sweep.replicates
        self.rounds = max(self.replicates, len(self._batches()))  # every batch timed (and generated) once
        self.reference_times: list[float] | None = None  # vanilla's per-round latency, this invocation
        self.reference_flops: float | None = None
        self.invocation_env: dict[str, Any] = {}  # set when the run starts (summary columns)
        self.model: BaseModel | None = None
        self.settings: SamplingSettings | None = None
        self.vanilla: GeneratedBatch | None = None
        self.metric_cache: dict[str, Any] = {}  # MetricContext.cache, shared by all configurations
        self.metric_objects: dict[str, Any] = {}
        self.skipped_metrics: dict[str, str] = {}
        self.failed_now: list[str] = []  # specs that failed (or are partial) in this invocation
        self.unfit: dict[ConfigKey, BaseException] = {}  # configurations that do not fit the model

    # ------------------------------------------------------------------ resolving
    def _resolve_model(self) -> tuple[Any, Any]:
        try:
            return self.manager.base_model_config(self.sweep.model)
        except ValueError as err:  # option value conversion / spec syntax
            raise SweepError(f"--model {self.sweep.model!r}: {err}") from None

    def _resolve_configurations(self) -> list[Configuration]:
        specs = list(self.sweep.accelerators)
        if REFERENCE_ACCELERATOR not in self.manager.accelerators():
            raise SweepError(
                f"the {REFERENCE_ACCELERATOR!r} accelerator (the speed-up reference) is not "
                "registered; is migm-bench installed (pip install -e .)?"
            )
        configs: dict[ConfigKey, Configuration] = {}
        for spec in [REFERENCE_ACCELERATOR, *specs]:
            try:
                acc, cfg = self.manager.accelerator_config(spec)
            except ValueError as err:
                raise SweepError(f"--accel {spec!r}: {err}") from None
            conf = Configuration(spec, acc, cfg)
            configs.setdefault(conf.key, conf)  # duplicates (same key) run once
        return list(configs.values())  # vanilla reference first

    def run_name(self, model_name: str) -> str:
        if self.sweep.name:
            return self.sweep.name
        tag = config_tag(self.model_config)
        model_part = (
            model_name if tag == "default" else f"{model_name}-{tag.replace('=', '').replace(',', '-')}"
        )
        steps = self.sweep.steps or "default"
        name = f"{model_part}-N{steps}-n{self.n}-b{self.batch_size}-seed{self.sweep.seed}"
        return flatten_name(name + (f"-limit{self.sweep.limit}" if self.sweep.limit else ""))

    def compat(self) -> dict[str, Any]:
        """The settings a resumed run must share with the existing one."""
        return {
            "model": f"{self.model_spec.name}:{config_tag(self.model_config)}",
            "steps": self.sweep.steps,
            "seed": self.sweep.seed,
            "images": self.n,
            "batch_size": self.batch_size,
            "metrics": sorted(self.metric_names),
            "replicates": self.replicates,
            "warmup": self.sweep.warmup,
            "device": str(self.device),
        }

    # ----------------------------------------------------------------------- run
    def run(self) -> Path:
        store = RunStore(Path(self.sweep.out) / self.run_name(self.model_spec.name))
        try:
            existed = check_run_folder(store.dir)  # never write into a folder that is not a run folder
        except GuardError as err:
            raise SweepError(str(err)) from None
        if existed:
            self._check_compatible(store.read_run_info(), store)  # cheap refusals before any loading
        with torch.no_grad():
            self._prepare()  # model, configurations, metrics: every refusal before the run folder exists
        try:
            with store.lock():
                self._run_locked(store)
        except RunLocked as err:
            raise SweepError(str(err)) from None
        except OSError as err:
            raise SweepError(f"cannot write the run folder {store.dir}: {err.strerror or err}") from None
        finally:
            if not existed:
                remove_if_unused(store.dir)  # no empty run folder left behind
        return store.dir

    def _prepare(self) -> None:
        """Load the model and check every configuration and metric before anything runs."""
        try:
            self.model = self.model_spec.factory(self.model_config, self.device)
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001 (missing / corrupt / wrong-kind weights, ...)
            raise SweepError(
                f"cannot load base model {self.sweep.model!r}: {_error_line(err, where=False)}"
            ) from None
        base = self.model.default_sampling
        self.settings = dataclasses.replace(base, steps=self.sweep.steps or base.steps)
        for conf in self.configurations:
            self._validate_configuration(conf)
        self._prepare_metrics()

    def _validate_configuration(self, conf: Configuration) -> None:
        """Item 8, before anything runs: a configuration that cannot be built or asks for
        N < 1 is refused (SweepError). One that does not fit this base model (N above its
        token count, learned weights missing, corrupt or bound to another model: ``reset``
        loads them) is recorded as failed without sampling, and the sweep goes on."""
        rows = self.batch_size * (2 if self.settings.cfg_weight != 0 else 1)
        try:
            accelerator = conf.acc.factory(conf.config)
            steps = accelerator.num_steps(self.settings.steps)
            if not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001 (incl. a plugin's sys.exit)
            raise SweepError(f"--accel {conf.spec!r}: {_error_line(err, where=False)}") from None
        try:
            reveal_schedule(self.model.num_image_tokens, steps, self.settings.mask_schedule)
            accelerator.reset(self.model, rows)
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001
            self.unfit[conf.key] = err

    def _prepare_metrics(self) -> None:
        """Item 3: build every metric and check its preconditions before any sampling."""
        for name in self.metric_names:
            try:
                metric = self.manager.make_metric(name, self.model)
            except MetricUnavailable as why:
                self.skipped_metrics[name] = str(why)
                tqdm.write(f"migm-bench: metric {name} skipped: {why}", file=sys.stderr)
                continue
            except (KeyboardInterrupt, MemoryError):
                raise
            except BaseException as err:  # noqa: BLE001
                raise SweepError(f"metric {name} cannot run: {_error_line(err, where=False)}") from None
            need = int(getattr(metric, "min_images", 1))
            if self.n < need:
                raise SweepError(
                    f"metric {name} needs at least {need} images per configuration, got {self.n}; "
                    "raise --images (and --limit) or leave the metric out (--metrics)"
                )
            self.metric_objects[name] = metric

    def _run_locked(self, store: RunStore) -> None:
        previous = store.read_run_info()
        self._check_compatible(previous, store)
        self._check_weights(previous, store)
        if self.sweep.retry_failed:
            store.drop_failed()
        store.drop_unfinished_measurements()  # leftovers of a killed attempt

        with torch.no_grad():
            info = self._run_info(previous)
            store.write_run_info(info)
            self._run_all(store)
            info["finished"] = _now()
            info["skipped_metrics"] = self.skipped_metrics
            info["invocations"][-1]["failed"] = self.failed_now
            store.write_run_info(info)

    def _check_compatible(self, previous: dict[str, Any] | None, store: RunStore) -> None:
        if previous is None:
            return
        old = previous.get("compat", {})
        new = self.compat()
        diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in _COMPAT_FIELDS if old.get(k) != new[k]]
        if diff:
            raise SweepError(
                f"run {store.dir} already holds results of a different sweep ({'; '.join(diff)}); "
                "choose another --name or --out"
            )

    def _check_weights(self, previous: dict[str, Any] | None, store: RunStore) -> None:
        """Item 2: the weights behind finished rows (base model incl. tokenizer, and each
        accelerator's own weights) must be the ones loaded now, else resuming would mix models."""
        if previous is None:
            return
        old = (previous.get("base_model") or {}).get("fingerprint")
        new = _safe(self.model.fingerprint)
        if _known(old) and _known(new) and old != new:
            raise SweepError(
                f"run {store.dir} was measured with base model weights {old}, but the weights loaded now "
                f"have fingerprint {new} (a weights file changed); restore the weights or choose another --name"
            )
        finished = store.finished()
        recorded = {tuple(c.get("key", ())): c for c in previous.get("configurations", [])}
        for conf in self.configurations:
            if conf.key not in finished or conf.key not in recorded:
                continue
            old = recorded[conf.key].get("weights_fingerprint")
            new = self._weights_fingerprint(conf)
            if _known(old) and old != new:
                raise SweepError(
                    f"run {store.dir}: {conf.spec} was measured with weights {old}, but its weights now "
                    f"have fingerprint {new}; restore them or choose another --name"
                )

    def _weights_fingerprint(self, conf: Configuration) -> str | None:
        """An accelerator's own weights (optional ``weights_fingerprint(model)``), e.g. a shortcut."""
        fn = getattr(conf.acc.factory(conf.config), "weights_fingerprint", None)
        return None if fn is None else _safe(lambda: fn(self.model))

    def _run_all(self, store: RunStore) -> None:
        assert self.model is not None
        cond_gen = torch.Generator().manual_seed(self.sweep.seed)
        cond = self.model.conditions(self.n, cond_gen).to(self.device)  # (n,) paired across configs
        finished = store.finished()
        pending = [conf for conf in self.configurations if conf.key not in finished]
        if not pending:  # nothing to time: vanilla's outputs are neither reloaded nor regenerated
            return
        reference = self.configurations[0]  # vanilla at the reference N, always timed (same invocation)
        timed_confs = pending if reference in pending else [reference, *pending]
        runs = {conf.key: _ConfigRun(self, conf, cond) for conf in timed_confs}
        for run in runs.values():
            run.prepare()

        def failed(run: _ConfigRun, err: Exception) -> None:
            run.fail(err)
            tqdm.write(f"migm-bench: {run.conf.spec} failed: {_error_line(run.error)}", file=sys.stderr)

        contestants = [run for run in runs.values() if run.error is None]
        run_rounds(contestants, self.rounds, len(self._batches()), self.device, failed, self.sweep.seed,
                   self.progress)  # fmt: skip

        ref_run = runs[REFERENCE_KEY]
        self.reference_times = ref_run.latencies if ref_run.error is None else None
        if reference not in pending and finished.get(REFERENCE_KEY) in ("ok", "partial"):
            # quality pairs with the stored vanilla outputs (as the finished rows did); its time is not reused
            self.vanilla = self._load_vanilla(store, ref_run)
        elif reference not in pending and ref_run.error is None:
            self.vanilla = ref_run.generated()  # vanilla failed before but ran now: pair with this run's
        bar = tqdm(pending, desc="metrics", unit="config", disable=not self.progress)
        for conf in bar:
            bar.set_postfix_str(conf.spec)
            self._finish_configuration(store, runs[conf.key])
        bar.close()

    # ---------------------------------------------------------------- one config
    def _batches(self) -> list[tuple[int, int]]:
        b = self.batch_size
        return [(lo, min(lo + b, self.n)) for lo in range(0, self.n, b)]

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def _finish_configuration(self, store: RunStore, run: _ConfigRun) -> None:
        conf = run.conf
        if run.error is None:
            try:
                rows, summary, generated = self._measure(run, store)
            except (Exception, SystemExit) as err:  # noqa: BLE001 (record any failure and go on with the sweep)
                run.fail(err)
                tqdm.write(f"migm-bench: {conf.spec} failed: {_error_line(run.error)}", file=sys.stderr)
        if run.error is not None:
            store.log_error(f"[{_now()}] {conf.spec} ({conf.key[0]}/{conf.key[1]})\n{run.traceback}")
            summary = self._summary_base(conf, run.steps)
            summary.update(status="failed", error=_error_line(run.error), **self.invocation_env)
            store.append(conf.key, [], summary)
            self.failed_now.append(conf.spec)
            return
        if conf.key == REFERENCE_KEY:
            self.vanilla = generated
            self._save_vanilla(store, generated)  # before the commit point (the summary row)
        if summary["status"] != "ok":
            self.failed_now.append(conf.spec)
        store.append(conf.key, rows, summary)

    def _measure(
        self, run: _ConfigRun, store: RunStore
    ) -> tuple[list[dict[str, Any]], dict[str, Any], GeneratedBatch]:
        conf, steps, seed = run.conf, run.steps, self.sweep.seed
        rows: list[dict[str, Any]] = []

        def row(
            metric: str,
            value: float,
            unit: str,
            replicate: int = 0,
            row_seed: int = seed,
            higher: bool = False,
            reference: str = "none",
        ) -> None:
            rows.append(
                {
                    "run_id": store.dir.name,
                    "base_model": self.sweep.model,
                    "accelerator": conf.key[0],
                    "config_tag": conf.key[1],
                    "steps": steps,
                    "seed": row_seed,
                    "replicate": replicate,
                    "metric": metric,
                    "value": float(value),
                    "unit": unit,
                    "higher_is_better": higher,
                    "reference": reference,
                }
            )

        ref_times = self.reference_times
        for r, (j, latency) in enumerate(zip(run.batch_of_round, run.latencies)):
            row("latency_s_per_image", latency, "s", r, seed + j)
            if ref_times is not None:  # vanilla's time in the same round: the pair of the speed-up
                row("vanilla_latency_s_per_image", ref_times[r], "s", r, seed + j, reference="vanilla")
        for j, counts in enumerate(run.counts):
            for name, value in counts.items():
                row(name, value, "fraction" if name == "partial_coverage" else "calls", j, seed + j)
        for j, value in enumerate(run.decode_times):
            row("decode_s_per_image", value, "s", j, seed + j)

        model, settings, tap = self.model, self.settings, run.tap
        fb = min(FLOP_BATCH, self.n)
        cond = run.cond
        with _no_exit():
            flops = count_flops(lambda: sample(model, tap, cond[:fb], self._generator(seed), settings)) / fb
        row("flops_per_image", flops, "FLOP")
        row("peak_mem_mb", run.peak_mb, "MiB")

        generated = run.generated()
        metric_values, missing = self._compute_metrics(generated, conf.key, store, conf.spec)
        intervals = self._intervals(generated, conf.key, metric_values)
        for name, (value, info) in metric_values.items():
            row(name, value, info.unit, higher=info.higher_is_better, reference=info.reference)
            for i, v in enumerate(getattr(value, "per_image", ())):  # image i was sampled with seed + i // b
                row(f"{name}_per_image", v, info.unit, i, seed + i // self.batch_size, info.higher_is_better,
                    info.reference)  # fmt: skip

        summary = self._summary_base(conf, steps)
        mean_counts = {k: sum(c[k] for c in run.counts) / len(run.counts) for k in run.counts[0]}
        timing = self._timing_summary(run, flops, store)
        for col in ("speedup", "flop_speedup"):
            if conf.key != REFERENCE_KEY and math.isnan(timing[col]):
                missing[col] = NO_REFERENCE
        summary.update(
            **timing,
            flops_per_image=flops,
            peak_mem_mb=run.peak_mb,
            decode_s_per_image=median(run.decode_times),
            status="partial" if missing else "ok",
            error="",
            metric_errors=json.dumps(missing) if missing else "",
            **mean_counts,
            **{name: float(value) for name, (value, _) in metric_values.items()},
            **intervals,
            **self.invocation_env,
        )
        return rows, summary, generated

    def _timing_summary(self, run: _ConfigRun, flops: float, store: RunStore) -> dict[str, Any]:
        """Latency, paired speed-up with intervals, and the stability flag of one configuration."""
        latency = stats.median_interval(run.latencies, seed=self.sweep.seed)
        ref_times = self.reference_times
        if ref_times is None:  # vanilla failed in this invocation: nothing to pair with
            speedup = stats.Estimate(math.nan)
            ref_latency = math.nan
        else:
            speedup = stats.paired_speedup(ref_times, run.latencies, seed=self.sweep.seed)
            ref_latency = median(ref_times)
        if run.conf.key == REFERENCE_KEY:
            self.reference_flops = flops
        ref_flops = self._reference_flops(store)
        flop_speedup = ref_flops / flops if flops > 0 else math.nan
        batch_cv = stats.cv(run.latencies)
        problems = stats.timing_problems(batch_cv, speedup.value, flop_speedup)
        return {
            "latency_s_median": latency.value,
            "latency_s_iqr": iqr(run.latencies),
            "latency_s_ci_low": latency.low,
            "latency_s_ci_high": latency.high,
            "latency_cv": batch_cv,
            "rounds": len(run.latencies),
            "speedup": speedup.value,
            "speedup_ci_low": speedup.low,
            "speedup_ci_high": speedup.high,
            "vanilla_latency_s_median": ref_latency,
            "flop_speedup": flop_speedup,
            "saving_realised": stats.saving_realised(speedup.value, flop_speedup),
            "timing": "unstable" if problems else "ok",
            "timing_note": "; ".join(problems),
        }

    def _reference_flops(self, store: RunStore) -> float:
        """Vanilla's FLOPs per image: counted in this invocation, else the stored value (FLOPs
        are deterministic, unlike times)."""
        if self.reference_flops is None:
            ref = store.summary_row(REFERENCE_KEY)
            ok = ref is not None and ref.get("status") in ("ok", "partial")
            self.reference_flops = float(ref["flops_per_image"]) if ok else math.nan
        return self.reference_flops

    def _intervals(
        self, generated: GeneratedBatch, key: ConfigKey, values: dict[str, tuple[float, Any]]
    ) -> dict[str, Any]:
        """{metric_ci_low: .., metric_ci_high: ..} over image resamples (``bench.metrics.metric_interval``)."""
        vanilla = generated if key == REFERENCE_KEY else self.vanilla
        ctx = MetricContext(self.model, self.device, vanilla=vanilla, cache=self.metric_cache)
        out: dict[str, Any] = {}
        for name, (value, _info) in values.items():
            ci = metric_interval(self.metric_objects[name], generated, ctx, value, seed=self.sweep.seed)
            out[f"{name}{CI_LOW}"], out[f"{name}{CI_HIGH}"] = ci.low, ci.high
        return out

    def _compute_metrics(
        self, generated: GeneratedBatch, key: ConfigKey, store: RunStore, spec: str
    ) -> tuple[dict[str, tuple[float, Any]], dict[str, str]]:
        """(values, missing): each metric's finite value, or why it has none. A failing metric
        fails alone (item 3); metrics against vanilla need a successful reference (item 1)."""
        out: dict[str, tuple[float, Any]] = {}
        missing: dict[str, str] = {}
        vanilla = generated if key == REFERENCE_KEY else self.vanilla
        ctx = MetricContext(self.model, self.device, vanilla=vanilla, cache=self.metric_cache)
        for name in self.metric_names:
            if name in self.skipped_metrics:
                continue
            metric = self.metric_objects[name]
            if metric.info.reference == "vanilla" and vanilla is None:
                missing[name] = NO_REFERENCE
                continue
            try:
                value = metric.compute(generated, ctx)
                check_finite_value(name, value)  # NaN / inf: this metric failed, never ok
                if isinstance(value, MetricValue):
                    if not bool(torch.isfinite(value.per_image).all()):
                        raise NonFiniteError(f"metric {name}: NaN/inf in its per-image values")
                else:
                    value = float(value)
            except MetricUnavailable as why:
                self.skipped_metrics[name] = str(why)
                tqdm.write(f"migm-bench: metric {name} skipped: {why}", file=sys.stderr)
                continue
            except (Exception, SystemExit) as err:  # noqa: BLE001 (this metric fails; the row keeps the rest)
                store.log_error(f"[{_now()}] {spec}: metric {name}\n{traceback.format_exc()}")
                missing[name] = _error_line(err)
                tqdm.write(f"migm-bench: {spec}: metric {name} failed: {missing[name]}", file=sys.stderr)
                continue
            out[name] = (value, metric.info)
        return out, missing

    def _summary_base(self, conf: Configuration, steps: int | None) -> dict[str, Any]:
        return {
            "accelerator": conf.key[0],
            "config_tag": conf.key[1],
            "steps": steps if steps is not None else math.nan,
            "spec": conf.spec,
            "images": self.n,
        }

    # -------------------------------------------------------------- vanilla I/O
    def _save_vanilla(self, store: RunStore, generated: GeneratedBatch) -> None:
        payload = {"tokens": generated.tokens, "cond": generated.cond, "features": generated.features}
        atomic_write(store.dir / VANILLA_FILE, lambda tmp: torch.save(payload, tmp))

    def _load_vanilla(self, store: RunStore, fresh: _ConfigRun) -> GeneratedBatch:
        """Vanilla outputs of a finished reference: tokens (and features) from disk, images
        re-decoded (decoding is deterministic); this invocation's outputs (same seeds) when
        the file is missing or stale, saved for the next resume."""
        path = store.dir / VANILLA_FILE
        try:  # weights_only: a results file must not run code; anything unreadable is replaced
            payload = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
        except Exception:  # noqa: BLE001 (truncated / corrupt / foreign file)
            payload = None
        if not self._vanilla_payload_ok(payload, fresh.cond):
            tqdm.write(
                f"migm-bench: {path} missing, corrupt or stale; regenerating vanilla outputs (using this "
                "run's)",
                file=sys.stderr,
            )
            if fresh.error is not None:
                raise SweepError(
                    f"vanilla failed in this run and {path} is missing: {_error_line(fresh.error)}"
                )
            generated = fresh.generated()
            self._save_vanilla(store, generated)
            return generated
        tokens = payload["tokens"]
        images = torch.cat(
            [self.model.decode(tokens[lo:hi].to(self.device)).cpu() for lo, hi in self._batches()]
        )
        return GeneratedBatch(
            images=images,
            tokens=tokens,
            cond=payload["cond"],
            features=payload["features"],
            prompts=condition_prompts(self.model, payload["cond"]),
        )

    def _vanilla_payload_ok(self, payload: Any, cond: torch.Tensor) -> bool:
        if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k), torch.Tensor) for k in ("tokens", "cond")
        ):
            return False
        tokens, feats = payload["tokens"], payload.get("features")
        return (
            tokens.shape == (self.n, self.model.num_image_tokens)
            and not tokens.is_floating_point()
            and bool(((tokens >= 0) & (tokens < self.model.codebook_size)).all())
            and torch.equal(payload["cond"].cpu(), cond.cpu())
            and (feats is None or (isinstance(feats, torch.Tensor) and len(feats) == self.n
                                   and bool(torch.isfinite(feats).all())))
        )  # fmt: skip

    # ----------------------------------------------------------------- run.json
    def _prompts_info(self) -> dict[str, Any] | None:
        """Which prompts a text-to-image run used (None for class-conditional models): count and
        sha256 (16 hex) of the n prompts in image order, plus the model's ``prompt_record()``
        (e.g. the prompt set, filters and file hash) when it has one."""
        cond = self.model.conditions(self.n, torch.Generator().manual_seed(self.sweep.seed))  # as _run_all
        prompts = condition_prompts(self.model, cond)
        if prompts is None:
            return None
        info: dict[str, Any] = {
            "count": len(prompts),
            "distinct": len(set(prompts)),
            "sha256": hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16],
        }
        record = getattr(self.model, "prompt_record", None)
        if record is not None:
            info["selection"] = record()
        return info

    def _run_info(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _now()
        invocations = list((previous or {}).get("invocations", []))
        env = invocation_environment(self.device)  # what timed this invocation's rows
        self.invocation_env = {"invocation": len(invocations), **env}
        invocations.append({"date": now, "command": shlex.join(self.command), "environment": env})
        configurations = {tuple(c["key"]): c for c in (previous or {}).get("configurations", [])}
        for conf in self.configurations:
            configurations[conf.key] = {
                "key": list(conf.key),
                "spec": conf.spec,
                "accelerator": conf.acc.name,
                "config_tag": conf.key[1],
                "config": dataclasses.asdict(conf.config),
                "provider": conf.acc.provider,
                "weights_fingerprint": self._weights_fingerprint(conf),
            }
        metrics = []
        for name in self.metric_names:
            spec = self.manager.get_metric(name)
            metrics.append({**dataclasses.asdict(spec.info), "provider": spec.provider})
        model = self.model
        return {
            "run_id": self.run_name(self.model_spec.name),
            "created": (previous or {}).get("created", now),
            "updated": now,
            "finished": None,
            "compat": self.compat(),
            "sweep": dataclasses.asdict(self.sweep),
            "resolved": {
                "images": self.n,
                "batch_size": self.batch_size,
                "replicates": self.replicates,
                "reference_steps": self.settings.steps,
                "device": str(self.device),
            },
            "base_model": {
                "spec": self.sweep.model,
                "name": self.model_spec.name,
                "provider": self.model_spec.provider,
                "config": dataclasses.asdict(self.model_config),
                "config_tag": config_tag(self.model_config),
                "fingerprint": _safe(model.fingerprint),
                "sampling": dataclasses.asdict(self.settings),
                "num_image_tokens": model.num_image_tokens,
                "seq_len": model.seq_len,
            },
            "configurations": list(configurations.values()),
            "metrics": metrics,
            "prompts": self._prompts_info(),
            "environment": environment_info(self.device),
            "invocations": invocations,
        }


# ------------------------------------------------------------------- helpers
def run_sweep(
    sweep: Sweep,
    manager: PluginManager | None = None,
    command: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Run ``sweep`` and return its run directory."""
    return Runner(sweep, manager=manager, command=command, progress=progress).run()


def failed_this_run(run_dir: Path) -> list[str]:
    """Specs that failed or lost a metric in the latest invocation on ``run_dir`` (run.json)."""
    info = RunStore(run_dir).read_run_info() or {}
    invocations = info.get("invocations") or [{}]
    return list(invocations[-1].get("failed", []))


@contextlib.contextmanager
def _no_exit() -> Iterator[None]:
    """A plugin's sys.exit while sampling becomes an ordinary error of that configuration."""
    try:
        yield
    except SystemExit as err:
        raise PluginExit(f"a plugin called sys.exit({err.code!r})") from err


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _safe(fn: Any) -> str:
    try:
        return str(fn())
    except Exception as err:  # noqa: BLE001 (the fingerprint is informative only)
        return f"unavailable ({type(err).__name__}: {err})"


def _known(fingerprint: Any) -> bool:
    return isinstance(fingerprint, str) and bool(fingerprint) and not fingerprint.startswith("unavailable")


def _error_line(err: BaseException, where: bool = True) -> str:
    """'ValueError: message (at file.py:12 in fn)': the exception and where it was raised."""
    msg = " ".join(f"{type(err).__name__}: {err}".split())
    frames = traceback.extract_tb(err.__traceback__)
    if frames and where:
        last = frames[-1]
        msg += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return msg


def _iter_versions() -> Iterator[tuple[str, str]]:
    for dist in (
        "migm-bench",
        "torch",
        "numpy",
        "pandas",
        "pyarrow",
        "pluggy",
        "torchmetrics",
        "safetensors",
        "matplotlib",
    ):
        try:
            yield dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue


def git_info() -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout holding ``bench`` (None outside git)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args], check=False, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_hash": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def environment_info(device: torch.device) -> dict[str, Any]:
    return {
        **git_info(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": dict(_iter_versions()),
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "peak_memory": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS (VmHWM)",
    }
