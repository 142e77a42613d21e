"""The reference's outputs in the run folder (``vanilla_outputs.pt`` for the default reference):
the tokens, conditions and final features every configuration's quality is paired with. A
resumed run reloads them, so new configurations pair with the same outputs as finished ones;
images are re-decoded (decoding is deterministic)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.contestant import ConfigRun, SamplingSetup
from bench.guards import error_line, flatten_name
from bench.protocol import GeneratedBatch, condition_prompts
from bench.results import atomic_write
from bench.sweep import SweepError


def outputs_file(reference: str) -> str:
    """The file name of accelerator ``reference``'s outputs: 'vanilla' -> 'vanilla_outputs.pt'."""
    return f"{flatten_name(reference)}_outputs.pt"


def save_outputs(path: Path, generated: GeneratedBatch) -> None:
    payload = {"tokens": generated.tokens, "cond": generated.cond, "features": generated.features}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_outputs(path: Path, setup: SamplingSetup, fresh: ConfigRun) -> GeneratedBatch:
    """The outputs of a finished reference: tokens (and features) from ``path``, images
    re-decoded; this invocation's outputs of the reference (``fresh``, same seeds) when the
    file is missing, corrupt or stale, saved for the next resume."""
    try:  # weights_only: a results file must not run code; anything unreadable is replaced
        payload = torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None
    except Exception:  # noqa: BLE001 (truncated / corrupt / foreign file)
        payload = None
    reference = fresh.key[0]
    if not _payload_ok(payload, setup):
        tqdm.write(
            f"migm-bench: {path} missing, corrupt or stale; regenerating {reference} outputs (using this "
            "run's)",
            file=sys.stderr,
        )
        if fresh.error is not None:
            raise SweepError(
                f"{reference} failed in this run and {path} is missing: {error_line(fresh.error)}"
            )
        generated = fresh.generated()
        save_outputs(path, generated)
        return generated
    tokens, model = payload["tokens"], setup.model
    images = torch.cat([model.decode(tokens[lo:hi].to(setup.device)).cpu() for lo, hi in setup.batches])
    return GeneratedBatch(
        images=images,
        tokens=tokens,
        cond=payload["cond"],
        features=payload["features"],
        prompts=condition_prompts(model, payload["cond"]),
    )


def _payload_ok(payload: Any, setup: SamplingSetup) -> bool:
    """Tokens of the right shape and range, the same conditions, finite features."""
    if not isinstance(payload, dict) or not all(
        isinstance(payload.get(k), torch.Tensor) for k in ("tokens", "cond")
    ):
        return False
    model, n = setup.model, len(setup.cond)
    tokens, feats = payload["tokens"], payload.get("features")
    return (
        tokens.shape == (n, model.num_image_tokens)
        and not tokens.is_floating_point()
        and bool(((tokens >= 0) & (tokens < model.codebook_size)).all())
        and torch.equal(payload["cond"].cpu(), setup.cond.cpu())
        and (feats is None or (isinstance(feats, torch.Tensor) and len(feats) == n
                               and bool(torch.isfinite(feats).all())))
    )  # fmt: skip
