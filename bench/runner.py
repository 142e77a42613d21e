"""Run a sweep: one base model, the reference + accelerator configurations, paired by seed.

Semantics (every configuration sees exactly the same inputs):

* conditions: drawn once, ``model.conditions(n, torch.Generator().manual_seed(seed))``;
* batch j (images [j*b, (j+1)*b)) samples with a generator seeded ``seed + j``, so image i
  of every configuration has the same condition and sampling seed (outputs paired by seed);
* the reference (``Sweep.reference``, default vanilla) at the reference N (``--steps``,
  default ``model.default_sampling.steps``) is the latency reference and the output
  fidelity metrics compare against it. Its tokens/features are saved in the run directory
  (``vanilla_outputs.pt``, ``bench.reference_outputs``).

Timing is interleaved (``bench.interleave``): every configuration still to run *and* the
reference get an untimed warm-up batch, then ``replicates`` (``--rounds``) rounds each time
one batch of every configuration, in a shuffled order (at least one round per batch, so
every image is generated once, ``bench.contestant``). Only ``bench.sampling.sample`` is
timed; per-image latency = batch time / batch size; decoding is timed separately. A
configuration's speed-up is the median over rounds of the reference's time / its time in
the same round, with a bootstrap 95 % interval (``bench.stats``). The reference is re-timed
in every invocation that runs anything (a resumed sweep reuses its stored outputs for
quality, never its stored time), so every speed-up is against the reference timed in the
same process; each summary row records the environment of the invocation that timed it.
Then each configuration is measured (``bench.measure``): FLOPs, counts, peak memory, the
quality metrics (``bench.metric_set``) with intervals, and a ``timing`` flag. A
configuration that raises is recorded as failed (with a one-line error; the traceback goes
to ``errors.log``) and the sweep goes on. Configurations already finished in the run
directory are skipped; results are written after the timed rounds, one configuration at a
time. ``run.json`` records the provenance (``bench.provenance``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.config import DEFAULT_SPEEDUP_ESTIMATOR, config_tag
from bench.contestant import ConfigRun, SamplingSetup
from bench.guards import GuardError, check_run_folder, error_line, remove_if_unused
from bench.interleave import run_rounds
from bench.measure import Measurer
from bench.metric_set import MetricSet
from bench.plugins import PluginManager, get_manager
from bench.protocol import BaseModel, PromptsUnsupported, SamplingSettings, condition_prompts, use_prompts
from bench.provenance import (
    add_invocation,
    base_model_record,
    configuration_records,
    environment_info,
    git_info,
    known,
    metric_records,
    now,
    prompts_info,
    prompts_sha256,
    safe_fingerprint,
)
from bench.reference_outputs import load_outputs, outputs_file, save_outputs
from bench.results import ConfigKey, RunLocked, RunStore
from bench.sampling import reveal_schedule
from bench.sweep import (
    DEFAULT_REFERENCE,
    Configuration,
    Sweep,
    SweepError,
    batch_bounds,
    default_sweep_specs,
    derived_run_name,
    resolve_configurations,
    resolve_device,
    spec_string,
)
from bench.timing import timing_threads

__all__ = [  # the names other modules import from here
    "DEFAULT_REFERENCE",
    "Configuration",
    "Runner",
    "Sweep",
    "SweepError",
    "default_sweep_specs",
    "environment_info",
    "failed_this_run",
    "git_info",
    "resolve_device",
    "run_sweep",
    "spec_string",
]

# Sweep fields that must match to resume (add to) an existing run, and the value a run.json
# written before a field existed stands for.
_COMPAT_FIELDS = ("model", "steps", "seed", "images", "batch_size", "metrics", "replicates", "warmup",
                  "device", "reference", "prompts", "speedup_estimator")  # fmt: skip
_COMPAT_BEFORE = {"reference": f"{DEFAULT_REFERENCE}:default", "speedup_estimator": DEFAULT_SPEEDUP_ESTIMATOR}


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
        self.configurations = resolve_configurations(sweep, self.manager)  # the reference first
        self.prompts, self.prompt_selection = self._resolve_prompts()  # --prompts: (prompts, record)
        self.reference_key: ConfigKey = self.configurations[0].key
        # --metrics now; without it the model's default_metrics() once it is built (_prepare)
        self.metrics: MetricSet | None = None if sweep.metrics is None else self._metric_set(sweep.metrics)
        self.n = sweep.image_count
        self.batch_size = min(sweep.batch_size, self.n)
        self.batches = batch_bounds(self.n, self.batch_size)
        self.replicates = 1 if sweep.limit else sweep.replicates
        self.rounds = max(self.replicates, len(self.batches))  # every batch timed (and generated) once
        self.invocation_env: dict[str, Any] = {}  # set when the run starts (summary columns)
        self.model: BaseModel | None = None
        self.settings: SamplingSettings | None = None
        self.failed_now: list[str] = []  # specs that failed (or are partial) in this invocation
        self.unfit: dict[ConfigKey, BaseException] = {}  # configurations that do not fit the model

    # ------------------------------------------------------------------ resolving
    def _resolve_model(self) -> tuple[Any, Any]:
        try:
            return self.manager.base_model_config(self.sweep.model)
        except ValueError as err:  # option value conversion / spec syntax
            raise SweepError(f"--model {self.sweep.model!r}: {err}") from None

    def _resolve_prompts(self) -> tuple[list[str] | None, dict[str, Any] | None]:
        """The prompts ``--prompts`` selects and their record (None, None without it)."""
        if self.sweep.prompts is None:
            return None, None
        try:
            return self.manager.resolve_prompts(self.sweep.prompts)
        except ValueError as err:
            raise SweepError(f"--prompts {self.sweep.prompts!r}: {err}") from None

    def _metric_set(self, names: list[str]) -> MetricSet:
        return MetricSet(self.manager, names, reference=self.reference_key[0])

    def _default_metric_names(self) -> list[str]:
        """Without --metrics: the model's own ``default_metrics()`` (``bench.protocol.BaseModel``),
        else every metric registered as default."""
        fn = getattr(self.model, "default_metrics", None)
        return list(fn()) if fn is not None else self.manager.default_metrics()

    @property
    def prompts_id(self) -> str | None:
        """The chosen prompts as a compat value: their count and hash (None without --prompts)."""
        if self.prompts is None:
            return None
        return f"{len(self.prompts)} prompts, sha256 {prompts_sha256(self.prompts)}"

    @property
    def metric_names(self) -> list[str] | None:
        """The metrics of this run (None before the model is built when they are its defaults)."""
        return None if self.metrics is None else self.metrics.names

    def run_name(self, model_name: str) -> str:
        if self.sweep.name:
            return self.sweep.name
        sha = None if self.prompts is None else prompts_sha256(self.prompts)
        return derived_run_name(self.sweep, model_name, self.model_config, self.batch_size, sha)

    def compat(self) -> dict[str, Any]:
        """The settings a resumed run must share with the existing one."""
        return {
            "model": f"{self.model_spec.name}:{config_tag(self.model_config)}",
            "steps": self.sweep.steps,
            "seed": self.sweep.seed,
            "images": self.n,
            "batch_size": self.batch_size,
            "metrics": None if self.metric_names is None else sorted(self.metric_names),
            "replicates": self.replicates,
            "warmup": self.sweep.warmup,
            "device": str(self.device),
            "reference": ":".join(self.reference_key),
            "prompts": self.prompts_id,
            "speedup_estimator": self.sweep.speedup_estimator,
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
        with timing_threads(self.sweep.threads):  # every row of this invocation records the count
            return self._run(store, existed)

    def _run(self, store: RunStore, existed: bool) -> Path:
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
                f"cannot load base model {self.sweep.model!r}: {error_line(err, where=False)}"
            ) from None
        self._use_prompts()
        base = self.model.default_sampling
        self.settings = dataclasses.replace(base, steps=self.sweep.steps or base.steps)
        for conf in self.configurations:
            self._validate_configuration(conf)
        if self.metrics is None:  # an unknown name among the model's defaults: UnknownNameError, as --metrics
            self.metrics = self._metric_set(self._default_metric_names())
        self.metrics.prepare(self.model, self.n)

    def _use_prompts(self) -> None:
        """Hand the model the ``--prompts`` chosen (``bench.protocol.use_prompts``) and check that
        it follows the protocol: image i gets prompt i mod their count."""
        if self.prompts is None:
            return
        try:
            use_prompts(self.model, self.prompts, self.prompt_selection)
        except PromptsUnsupported as err:
            raise SweepError(f"--prompts {self.sweep.prompts!r}: {err}") from None
        expected = [self.prompts[i % len(self.prompts)] for i in range(self.n)]
        if condition_prompts(self.model, self._conditions()) != expected:
            raise SweepError(
                f"base model {self.sweep.model!r} took the --prompts but its conditions do not give image i "
                f"prompt i mod {len(self.prompts)} (see bench.protocol.use_prompts)"
            )

    def _validate_configuration(self, conf: Configuration) -> None:
        """Before anything runs: a configuration that cannot be built or asks for N < 1 is
        refused (SweepError). One that does not fit this base model (N above its token count,
        learned weights missing, corrupt or bound to another model: ``reset`` loads them) is
        recorded as failed without sampling, and the sweep goes on."""
        rows = self.batch_size * (2 if self.settings.cfg_weight != 0 else 1)
        option = "--reference" if conf is self.configurations[0] else "--accel"
        try:
            accelerator = conf.acc.factory(conf.config)
            steps = accelerator.num_steps(self.settings.steps)
            if not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001 (incl. a plugin's sys.exit)
            raise SweepError(f"{option} {conf.spec!r}: {error_line(err, where=False)}") from None
        try:
            reveal_schedule(self.model.num_image_tokens, steps, self.settings.mask_schedule)
            accelerator.reset(self.model, rows)
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as err:  # noqa: BLE001
            self.unfit[conf.key] = err

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
            info["finished"] = now()
            info["skipped_metrics"] = self.metrics.skipped
            info["invocations"][-1]["failed"] = self.failed_now
            store.write_run_info(info)

    def _check_compatible(self, previous: dict[str, Any] | None, store: RunStore) -> None:
        if previous is None:
            return
        old = {**_COMPAT_BEFORE, **previous.get("compat", {})}
        new = self.compat()
        fields = [k for k in _COMPAT_FIELDS if new[k] is not None or k != "metrics"]  # known after loading
        diff = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in fields if old.get(k) != new[k]]
        if diff:
            raise SweepError(
                f"run {store.dir} already holds results of a different sweep ({'; '.join(diff)}); "
                "choose another --name or --out"
            )

    def _check_weights(self, previous: dict[str, Any] | None, store: RunStore) -> None:
        """The weights behind finished rows (base model incl. tokenizer, and each accelerator's
        own weights) must be the ones loaded now, else resuming would mix models."""
        if previous is None:
            return
        old = (previous.get("base_model") or {}).get("fingerprint")
        new = safe_fingerprint(self.model.fingerprint)
        if known(old) and known(new) and old != new:
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
            if known(old) and old != new:
                raise SweepError(
                    f"run {store.dir}: {conf.spec} was measured with weights {old}, but its weights now "
                    f"have fingerprint {new}; restore them or choose another --name"
                )

    def _weights_fingerprint(self, conf: Configuration) -> str | None:
        """An accelerator's own weights (optional ``weights_fingerprint(model)``), e.g. a shortcut."""
        fn = getattr(conf.acc.factory(conf.config), "weights_fingerprint", None)
        return None if fn is None else safe_fingerprint(lambda: fn(self.model))

    def _conditions(self) -> torch.Tensor:
        """(n,) conditions, drawn once from the sweep's seed: paired across configurations."""
        return self.model.conditions(self.n, torch.Generator().manual_seed(self.sweep.seed))

    # ------------------------------------------------------- rounds and measuring
    def _run_all(self, store: RunStore) -> None:
        assert self.model is not None
        finished = store.finished()
        pending = [conf for conf in self.configurations if conf.key not in finished]
        if not pending:  # nothing to time: the reference's outputs are neither reloaded nor regenerated
            return
        setup = SamplingSetup(self.model, self.settings, self.device, self._conditions().to(self.device),
                              self.sweep.seed, self.batches, self.sweep.warmup, self.sweep.keep_features)  # fmt: skip
        reference = self.configurations[0]  # always timed (same invocation)
        timed_confs = pending if reference in pending else [reference, *pending]
        runs = {conf.key: ConfigRun(setup, conf, self.unfit.get(conf.key)) for conf in timed_confs}
        for run in runs.values():
            run.prepare()
        contestants = [run for run in runs.values() if run.error is None]
        run_rounds(contestants, self.rounds, len(self.batches), self.device, self._failed, self.sweep.seed,
                   self.progress)  # fmt: skip

        measurer = Measurer(setup, store, self.sweep.model, self.metrics, self.reference_key,
                            self.invocation_env, self.batch_size, self.sweep.speedup_estimator)  # fmt: skip
        ref_run = runs[self.reference_key]
        measurer.reference_times = ref_run.latencies if ref_run.error is None else None
        if reference not in pending and finished.get(self.reference_key) in ("ok", "partial"):
            # quality pairs with the stored reference outputs (as the finished rows did); its time is not reused
            measurer.reference_outputs = load_outputs(self._outputs_path(store), setup, ref_run)
        elif reference not in pending and ref_run.error is None:
            measurer.reference_outputs = ref_run.generated()  # failed before but ran now: pair with these
        bar = tqdm(pending, desc="metrics", unit="config", disable=not self.progress)
        for conf in bar:
            bar.set_postfix_str(conf.spec)
            self._finish_configuration(store, runs[conf.key], measurer)
        bar.close()

    def _failed(self, run: ConfigRun, err: BaseException) -> None:
        run.fail(err)
        tqdm.write(f"migm-bench: {run.conf.spec} failed: {error_line(run.error)}", file=sys.stderr)

    def _outputs_path(self, store: RunStore) -> Path:
        return store.dir / outputs_file(self.reference_key[0])

    def _finish_configuration(self, store: RunStore, run: ConfigRun, measurer: Measurer) -> None:
        conf = run.conf
        if run.error is None:
            try:
                measured = measurer.measure(run)
            except (Exception, SystemExit) as err:  # noqa: BLE001 (record any failure and go on with the sweep)
                self._failed(run, err)
        if run.error is not None:
            store.log_error(f"[{now()}] {conf.spec} ({conf.key[0]}/{conf.key[1]})\n{run.traceback}")
            store.append(conf.key, [], measurer.failed_summary(run))
            self.failed_now.append(conf.spec)
            return
        if conf.key == self.reference_key:
            measurer.reference_outputs = measured.generated
            # saved before the commit point (the summary row)
            save_outputs(self._outputs_path(store), measured.generated)
        if measured.summary["status"] != "ok":
            self.failed_now.append(conf.spec)
        store.append(conf.key, measured.rows, measured.summary)

    # ----------------------------------------------------------------- run.json
    def _run_info(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        date = now()
        invocations, env = add_invocation(previous, date, self.command, self.device)
        self.invocation_env = {"invocation": len(invocations) - 1, **env}
        return {
            "run_id": self.run_name(self.model_spec.name),
            "created": (previous or {}).get("created", date),
            "updated": date,
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
            "base_model": base_model_record(
                self.sweep.model, self.model_spec, self.model_config, self.model, self.settings
            ),
            "configurations": configuration_records(previous, self.configurations, self._weights_fingerprint),
            "metrics": metric_records(self.manager, self.metric_names),
            "prompts": self._prompts_info(),
            "environment": environment_info(self.device),
            "invocations": invocations,
        }

    def _prompts_info(self) -> dict[str, Any] | None:
        """run.json's "prompts": count and hash of every image's prompt, and what selected them
        (the ``--prompts`` record, else the model's own ``prompt_record()``)."""
        info = prompts_info(self.model, self._conditions())
        if info is not None and self.prompt_selection is not None:
            info["selection"] = self.prompt_selection
        return info


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
