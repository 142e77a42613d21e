"""One configuration in the interleaved timed rounds (a ``bench.interleave.Contestant``).

Every configuration of an invocation samples with the same ``SamplingSetup``: the same model,
settings and conditions, and batch j with a generator seeded ``seed + j``, so image i of
every configuration is paired by seed. The first pass over a batch keeps its outputs
(tokens, decoded images, final-step features, model-call counts); later passes only time it.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.flops import count_flops
from bench.guards import FiniteTap, NonFiniteError, PluginExit, no_exit
from bench.protocol import Accelerator, BaseModel, GeneratedBatch, SamplingSettings, condition_prompts
from bench.sampling import SampleResult, sample
from bench.sweep import Configuration
from bench.timing import PeakMemory, timed

WARMUP_BATCH = 2  # images in each warm-up batch
FLOP_BATCH = 2  # images in the batch whose FLOPs are counted


@dataclass(frozen=True)
class SamplingSetup:
    """What every configuration of one invocation samples with."""

    model: BaseModel
    settings: SamplingSettings  # at the reference N
    device: torch.device
    cond: Tensor  # (n,) conditions, drawn once and paired across configurations
    seed: int  # batch j samples with a generator seeded seed + j
    batches: list[tuple[int, int]]  # [lo, hi) images of batch j
    warmup: int  # untimed warm-up batches per configuration
    keep_features: bool  # keep the final-step features of every image

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)


class ConfigRun:
    """One configuration's part of the interleaved rounds: its accelerator, every round's
    per-image latency, and the outputs of the first pass over each batch."""

    def __init__(self, setup: SamplingSetup, conf: Configuration, unfit: BaseException | None = None) -> None:
        self.setup, self.conf, self.unfit = setup, conf, unfit
        self.key = conf.key
        self.accelerator: Accelerator | None = None
        self.finite = FiniteTap()  # NaN/inf caught at the step where they first appear
        self.steps: int | None = None
        self.error: Exception | None = None
        self.traceback = ""
        self.latencies: list[float] = []  # per round, seconds per image
        self.batch_of_round: list[int] = []
        self.decode_times: list[float] = []  # per batch, seconds per image
        self.counts: list[dict[str, float]] = []  # per batch
        self.tokens: dict[int, Tensor] = {}  # batch -> (b, P)
        self.images: dict[int, Tensor] = {}  # batch -> (b, C, H, W)
        self.features: dict[int, Tensor] = {}  # batch -> (b, L, D), conditional stream
        self.peak_mb = math.nan

    @property
    def who(self) -> str:
        return f"{self.conf.spec} ({self.key[0]})"

    def prepare(self) -> None:
        """Build the accelerator; a failure is recorded (the configuration then does not run)."""
        try:
            if self.unfit is not None:  # found before the sweep started: recorded, not sampled
                raise self.unfit
            self.accelerator = self.conf.acc.factory(self.conf.config)
            self.steps = self.accelerator.num_steps(self.setup.settings.steps)
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
            self.finite.check(self.who)
        except NonFiniteError as err:
            return err
        return None

    # ------------------------------------------------------------------ sampling
    def _sample(self, cond: Tensor, seed: int) -> SampleResult:
        """One sampling call, every step's output watched for NaN/inf."""
        s = self.setup
        self.finite.reset()
        with no_exit():
            return sample(
                s.model, self.accelerator, cond, s.generator(seed), s.settings, on_step=self.finite.watch
            )

    def warmup(self) -> None:
        for _ in range(self.setup.warmup):  # untimed: lazy init, allocator, caches
            self._sample(self.setup.cond[:WARMUP_BATCH], self.setup.seed)

    def generate(self, batch: int) -> tuple[SampleResult, PeakMemory]:
        """The timed work: batch ``batch`` of the conditions, seeded ``seed + batch``."""
        lo, hi = self.setup.batches[batch]
        with PeakMemory(self.setup.device) as mem:
            result = self._sample(self.setup.cond[lo:hi], self.setup.seed + batch)
        return result, mem

    def record(
        self, round_: int, batch: int, seconds: float, result: tuple[SampleResult, PeakMemory]
    ) -> None:
        sampled, mem = result
        s = self.setup
        self.finite.check(self.who)  # after the timed call
        lo, hi = s.batches[batch]
        self.latencies.append(seconds / (hi - lo))
        self.batch_of_round.append(batch)
        self.peak_mb = mem.mb if math.isnan(self.peak_mb) else max(self.peak_mb, mem.mb)
        if batch in self.tokens:  # a later pass over the batch: timing only
            return
        self.counts.append(self.accelerator.counts.as_dict())
        if s.keep_features and sampled.final_features is not None:
            self.features[batch] = sampled.final_features[: hi - lo].float().cpu()  # conditional stream
        with timed(s.device) as watch:
            decoded = s.model.decode(sampled.tokens)  # (b, C, H, W) in [0, 1]
        self.decode_times.append(watch.seconds / (hi - lo))
        self.tokens[batch] = sampled.tokens.cpu()
        self.images[batch] = decoded.cpu()

    def flops_per_image(self) -> float:
        """FLOPs of one sampling call on a small batch, per image (the same on any machine)."""
        fb = min(FLOP_BATCH, len(self.setup.cond))
        return count_flops(lambda: self._sample(self.setup.cond[:fb], self.setup.seed)) / fb

    def generated(self) -> GeneratedBatch:
        """Every image's outputs, in image order (the first pass over each batch)."""
        order = sorted(self.tokens)
        features = [self.features[j] for j in order] if len(self.features) == len(order) else None
        return GeneratedBatch(
            images=torch.cat([self.images[j] for j in order]),
            tokens=torch.cat([self.tokens[j] for j in order]),
            cond=self.setup.cond.cpu(),
            features=torch.cat(features) if features is not None else None,
            prompts=condition_prompts(self.setup.model, self.setup.cond),
        )
