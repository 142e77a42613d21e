"""What a sweep runs: its settings (``Sweep``), its resolved configurations, spec strings and
the default sweep. Nothing here loads a model or samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.config import (
    DEFAULT_REFERENCE,
    DEFAULT_ROUNDS,
    DEFAULT_SPEEDUP_ESTIMATOR,
    DEFAULT_TIMING_THREADS,
    SPEEDUP_ESTIMATORS,
    config_tag,
)
from bench.guards import GuardError, check_run_name, flatten_name
from bench.plugins import PluginManager, get_manager
from bench.results import ConfigKey
from bench.specs import AcceleratorSpec

if TYPE_CHECKING:
    import torch

# The accelerator whose time and outputs every configuration is compared with, unless the
# sweep names another (``Sweep.reference``, ``migm-bench run --reference``).


class SweepError(ValueError):
    """A sweep that cannot run as asked (bad option value, incompatible resume, ...)."""


@dataclass
class Sweep:
    """What to run.

    model: base model spec, e.g. ``maskgit:config=tiny``.
    accelerators: accelerator spec strings (``few-step:steps=8``); the reference is added
        first if missing.
    reference: spec of the accelerator every speed-up and every metric "vs vanilla" is
        measured against (default ``vanilla``). It always runs, first. The result files keep
        their column names (``vanilla_latency_s_median`` holds the reference's latency); its
        outputs are stored as ``<name>_outputs.pt``.
    steps: reference N (None: the model's ``default_sampling.steps``).
    seed: base seed (conditions; batch j samples with ``seed + j``).
    images / batch_size: images per configuration and per sampling call.
    metrics: metric names (None: the base model's ``default_metrics()`` when it has the method,
        else every registered metric marked ``default``).
    replicates: timed rounds (``--rounds``): each round times one batch of every
        configuration, the reference included; at least one round per batch, and batches are
        re-timed (same seeds) when there are fewer batches than rounds. warmup: untimed
        warm-up batches per configuration before the rounds.
    name / out: results go to ``out/name`` (name None: derived from the settings, so
        rerunning the same command resumes the same run).
    device: "cpu", "cuda", "cuda:1", or "auto".
    limit: smoke run: at most ``limit`` images per configuration, no extra timing passes.
    keep_features: keep final-step features for metrics (costs n * L * D floats).
    retry_failed: rerun configurations recorded as failed in an existing run.
    threads: torch intra-op threads while the sweep runs (``--threads``; default 1, see
        ``bench.config.DEFAULT_TIMING_THREADS``: stable speed-ups on a shared machine at the
        price of absolute speed; 0 keeps torch's default of one per core). Recorded per row.
    prompts: prompt spec of a text-to-image run (``--prompts``): a named set with its selection
        (``parti:category=Animals,limit=200``, ``geneval:limit=50``) or a prompt file, one
        prompt per line; resolved by the ``resolve_prompts`` hook and handed to the base model
        (``bench.protocol.use_prompts``), image i gets prompt i mod their count. None: the
        model's own conditions (a text-to-image model's default prompts).
    speedup_estimator: how the paired rounds give a speed-up (``--speedup-estimator``,
        ``bench.stats``): ``median-ratio`` (default: the median of the per-round ratios) or
        ``min`` (fastest round over fastest round, the least disturbed on a shared machine).
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
    reference: str = DEFAULT_REFERENCE
    threads: int = DEFAULT_TIMING_THREADS
    prompts: str | None = None
    speedup_estimator: str = DEFAULT_SPEEDUP_ESTIMATOR

    def validate(self) -> None:
        if self.speedup_estimator not in SPEEDUP_ESTIMATORS:
            raise SweepError(
                f"unknown speed-up estimator {self.speedup_estimator!r}; choose one of {', '.join(SPEEDUP_ESTIMATORS)}"
            )
        for key in ("images", "batch_size", "replicates"):
            if getattr(self, key) < 1:
                raise SweepError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup < 0:
            raise SweepError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads < 0:
            raise SweepError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.steps is not None and self.steps < 1:
            raise SweepError(f"steps must be >= 1, got {self.steps}")
        if self.limit is not None and self.limit < 1:
            raise SweepError(f"limit must be >= 1, got {self.limit}")
        if self.name is not None:
            try:
                check_run_name(self.name)
            except GuardError as err:
                raise SweepError(str(err)) from None

    @property
    def image_count(self) -> int:
        """Images per configuration: ``images``, capped by ``limit``."""
        return min(self.images, self.limit) if self.limit else self.images


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


def default_sweep_specs(
    manager: PluginManager | None = None, reference: str = DEFAULT_REFERENCE
) -> list[str]:
    """The reference + every registered accelerator's ``default_sweep``, as spec strings."""
    manager = manager or get_manager()
    specs = [reference]
    for name, acc in manager.accelerators().items():
        specs += [spec_string(name, opts) for opts in acc.default_sweep]
    return list(dict.fromkeys(specs))  # vanilla's own default sweep is the reference again


def resolve_configurations(sweep: Sweep, manager: PluginManager) -> list[Configuration]:
    """The sweep's configurations, the reference first, each key once (names and options
    checked here: bad input fails before anything is built)."""
    if sweep.reference == DEFAULT_REFERENCE and DEFAULT_REFERENCE not in manager.accelerators():
        raise SweepError(
            f"the {DEFAULT_REFERENCE!r} accelerator (the speed-up reference) is not "
            "registered; is migm-bench installed (pip install -e .)?"
        )
    configs: dict[ConfigKey, Configuration] = {}
    for i, spec in enumerate([sweep.reference, *sweep.accelerators]):
        try:
            acc, cfg = manager.accelerator_config(spec)
        except ValueError as err:
            raise SweepError(f"{'--reference' if i == 0 else '--accel'} {spec!r}: {err}") from None
        conf = Configuration(spec, acc, cfg)
        configs.setdefault(conf.key, conf)  # duplicates (same key) run once
    return list(configs.values())


def resolve_device(device: str) -> torch.device:
    import torch  # here: the CLI reads Sweep's defaults for --help without loading torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise SweepError(f"bad --device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"--device {device}: CUDA is not available on this machine")
    return dev


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[lo, hi) image ranges of the batches: batch j samples with seed + j."""
    return [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]


def derived_run_name(
    sweep: Sweep, model_name: str, model_config: Any, batch_size: int, prompts_sha: str | None = None
) -> str:
    """The run folder name when ``sweep.name`` is not given: the settings that make a run, so
    rerunning the same command resumes it (``prompts_sha``: hash of the ``--prompts`` chosen)."""
    tag = config_tag(model_config)
    model_part = model_name if tag == "default" else f"{model_name}-{tag.replace('=', '').replace(',', '-')}"
    steps = sweep.steps or "default"
    name = f"{model_part}-N{steps}-n{sweep.image_count}-b{batch_size}-seed{sweep.seed}"
    if sweep.limit:
        name += f"-limit{sweep.limit}"
    if sweep.reference != DEFAULT_REFERENCE:
        name += f"-ref-{sweep.reference}"
    if prompts_sha:
        name += f"-prompts{prompts_sha[:8]}"
    if sweep.speedup_estimator != DEFAULT_SPEEDUP_ESTIMATOR:
        name += f"-{sweep.speedup_estimator}"
    return flatten_name(name)
