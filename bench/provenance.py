"""Where a run's numbers come from, for ``run.json``: the checkout (git), the environment
(Python, libraries, hardware), every invocation's command, and the records of the base model,
the configurations, the metrics and the prompts (lm-eval's ``add_env_info`` does the same)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.config import config_tag
from bench.plugins import PluginManager
from bench.protocol import BaseModel, SamplingSettings, condition_prompts
from bench.sweep import Configuration
from bench.timing import cpu_name, device_name, invocation_environment

# Distributions whose versions run.json records (those not installed are left out).
RECORDED_VERSIONS = (
    "migm-bench",
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pluggy",
    "torchmetrics",
    "safetensors",
    "matplotlib",
)


def now() -> str:
    """UTC time to the second, ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def safe_fingerprint(fn: Callable[[], Any]) -> str:
    """``str(fn())``, or 'unavailable (...)' when it raises (a fingerprint is informative only)."""
    try:
        return str(fn())
    except Exception as err:  # noqa: BLE001
        return f"unavailable ({type(err).__name__}: {err})"


def known(fingerprint: Any) -> bool:
    """A fingerprint that was actually computed (not missing, not 'unavailable ...')."""
    return isinstance(fingerprint, str) and bool(fingerprint) and not fingerprint.startswith("unavailable")


# -------------------------------------------------------------------- the machine
def _iter_versions() -> Iterator[tuple[str, str]]:
    for dist in RECORDED_VERSIONS:
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


# ---------------------------------------------------------------------- records
def add_invocation(
    previous: dict[str, Any] | None, date: str, command: Sequence[str], device: torch.device
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(every invocation so far with this one appended, this invocation's environment:
    what timed its rows)."""
    invocations = list((previous or {}).get("invocations", []))
    env = invocation_environment(device)
    invocations.append({"date": date, "command": shlex.join(command), "environment": env})
    return invocations, env


def configuration_records(
    previous: dict[str, Any] | None,
    configurations: Sequence[Configuration],
    weights_fingerprint: Callable[[Configuration], str | None],
) -> list[dict[str, Any]]:
    """Earlier invocations' configurations, updated with this one's."""
    records = {tuple(c["key"]): c for c in (previous or {}).get("configurations", [])}
    for conf in configurations:
        records[conf.key] = {
            "key": list(conf.key),
            "spec": conf.spec,
            "accelerator": conf.acc.name,
            "config_tag": conf.key[1],
            "config": dataclasses.asdict(conf.config),
            "provider": conf.acc.provider,
            "weights_fingerprint": weights_fingerprint(conf),
        }
    return list(records.values())


def metric_records(manager: PluginManager, names: Sequence[str]) -> list[dict[str, Any]]:
    records = []
    for name in names:
        spec = manager.get_metric(name)
        records.append({**dataclasses.asdict(spec.info), "provider": spec.provider})
    return records


def base_model_record(
    spec_string: str, spec: Any, config: Any, model: BaseModel, settings: SamplingSettings
) -> dict[str, Any]:
    return {
        "spec": spec_string,
        "name": spec.name,
        "provider": spec.provider,
        "config": dataclasses.asdict(config),
        "config_tag": config_tag(config),
        "fingerprint": safe_fingerprint(model.fingerprint),
        "sampling": dataclasses.asdict(settings),
        "num_image_tokens": model.num_image_tokens,
        "seq_len": model.seq_len,
    }


def prompts_info(model: BaseModel, cond: torch.Tensor) -> dict[str, Any] | None:
    """Which prompts a text-to-image run used (None for class-conditional models): count and
    sha256 (16 hex) of the n prompts in image order, plus the model's ``prompt_record()``
    (e.g. the prompt set, filters and file hash) when it has one."""
    prompts = condition_prompts(model, cond)
    if prompts is None:
        return None
    info: dict[str, Any] = {
        "count": len(prompts),
        "distinct": len(set(prompts)),
        "sha256": prompts_sha256(prompts),
    }
    record = getattr(model, "prompt_record", None)
    if record is not None:
        info["selection"] = record()
    return info


def prompts_sha256(prompts: list[str]) -> str:
    """sha256 (first 16 hex digits) of the prompts joined by newlines, in order (the same hash
    as ``metrics.prompts.prompts_hash``)."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16]
