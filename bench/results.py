"""Result files of one run, ``results/<run-name>/``, written crash-safely.

* ``measurements.parquet`` (mirrored as ``measurements.csv``): tidy, one row per replicate
  and metric (``MEASUREMENT_COLUMNS``).
* ``summary.csv``: one row per configuration (``SUMMARY_COLUMNS`` + one column per quality
  metric, each with ``<metric>_ci_low`` / ``<metric>_ci_high``, its 95 % interval). A
  configuration is *finished* exactly when its row is here.
* ``run.json``: resolved configuration, environment (git hash, library versions, CPU/GPU),
  dates and every command line that worked on the run.

Layout after the tidy-data convention of lm-evaluation-harness / TorchBench results (one
row per measurement, a per-config summary beside it, the environment in JSON).

Crash safety: each file is rewritten whole into a temporary file in the same directory,
flushed to disk and atomically renamed over the old one, so a SIGKILL at any moment leaves
either the old or the new file. Measurements are written *before* the summary row that
marks the configuration finished; rows of a configuration that has no summary row are
leftovers of a killed attempt and are dropped when the run resumes
(``drop_unfinished_measurements``). So a resumed run loses nothing it finished and
duplicates nothing.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

MEASUREMENT_COLUMNS = [
    "run_id",
    "base_model",
    "accelerator",
    "config_tag",
    "steps",
    "seed",
    "replicate",
    "metric",
    "value",
    "unit",
    "higher_is_better",
    "reference",
]
SUMMARY_COLUMNS = [
    "accelerator",
    "config_tag",
    "steps",
    "latency_s_median",
    "latency_s_iqr",
    "latency_s_ci_low",
    "latency_s_ci_high",
    "latency_cv",
    "rounds",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "speedup_estimator",
    "vanilla_latency_s_median",
    "flops_per_image",
    "flop_speedup",
    "saving_realised",
    "timing",
    "timing_note",
    "full_forwards",
    "partial_forwards",
    "partial_coverage",
    "other_calls",
    "peak_mem_mb",
    "decode_s_per_image",
    "status",
    "error",
    "metric_errors",  # JSON {metric: why it has no value} (failed or skipped metrics); "" if none
    "spec",
    "images",
    # the environment of the invocation that timed the row (bench.timing.invocation_environment)
    "invocation",
    "host",
    "torch_version",
    "threads",
    "device",
    "cpu_count",
    "load_avg_start",
]
# Quality metric columns are the other columns; each has its 95 % interval beside it.
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"
# ok: everything measured; partial: timing, FLOPs and counts measured but some metrics have
# no value (``metric_errors`` says why); failed: the configuration did not run through.
FINISHED_STATUSES = ("ok", "partial", "failed")
RETRY_STATUSES = ("partial", "failed")  # what --retry-failed runs again


def metric_columns(columns: Iterable[str]) -> list[str]:
    """The quality-metric columns of a summary: not fixed columns, not interval bounds."""
    return [c for c in columns if c not in SUMMARY_COLUMNS and not c.endswith((CI_LOW, CI_HIGH))]


ConfigKey = tuple[str, str]  # (accelerator, config_tag)


class RunLocked(RuntimeError):
    """Another process is writing to this run directory."""


class RunCorrupt(ValueError):
    """A result file of a run cannot be read; nothing is overwritten."""


def _corrupt(path: Path, err: BaseException) -> RunCorrupt:
    why = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    return RunCorrupt(
        f"{path} is corrupt ({why}); nothing was changed. Restore it, or move the run folder away "
        "and choose another --name"
    )


# ------------------------------------------------------------------ atomic writes
def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a temp file beside ``path``, fsync it, rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save_safetensors(
    path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` through ``atomic_write``: the file is complete or absent."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _frame_bytes_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


# ----------------------------------------------------------------------- the store
class RunStore:
    """Reads and appends the result files of one run directory."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(run_dir)
        self.measurements_parquet = self.dir / "measurements.parquet"
        self.measurements_csv = self.dir / "measurements.csv"
        self.summary_csv = self.dir / "summary.csv"
        self.run_json = self.dir / "run.json"
        self.errors_log = self.dir / "errors.log"

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------- reading
    def summary(self) -> pd.DataFrame:
        if not self.summary_csv.exists():
            return pd.DataFrame(columns=SUMMARY_COLUMNS)
        try:
            df = pd.read_csv(self.summary_csv, keep_default_na=False, na_values=[""])
            missing = {"accelerator", "config_tag", "status"} - set(df.columns)
            if missing:
                raise ValueError(f"no column(s) {', '.join(sorted(missing))}")
        except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
            raise _corrupt(self.summary_csv, err) from None
        df["config_tag"] = df["config_tag"].astype(str)
        df["accelerator"] = df["accelerator"].astype(str)
        return df

    def measurements(self) -> pd.DataFrame:
        if not self.measurements_parquet.exists():
            return pd.DataFrame(columns=MEASUREMENT_COLUMNS)
        try:
            df = pd.read_parquet(self.measurements_parquet)
            missing = set(MEASUREMENT_COLUMNS) - set(df.columns)
            if missing:
                raise ValueError(f"no column(s) {', '.join(sorted(missing))}")
        except Exception as err:  # noqa: BLE001 (pyarrow raises many types for a damaged file)
            raise _corrupt(self.measurements_parquet, err) from None
        return df

    def finished(self) -> dict[ConfigKey, str]:
        """{(accelerator, config_tag): status} of every finished configuration."""
        df = self.summary()
        return {
            (a, t): s
            for a, t, s in zip(df["accelerator"], df["config_tag"], df["status"])
            if s in FINISHED_STATUSES
        }

    def summary_row(self, key: ConfigKey) -> dict[str, Any] | None:
        df = self.summary()
        hit = df[(df["accelerator"] == key[0]) & (df["config_tag"] == key[1])]
        return None if hit.empty else hit.iloc[0].to_dict()

    def read_run_info(self) -> dict[str, Any] | None:
        if not self.run_json.exists():
            return None
        try:
            info = json.loads(self.run_json.read_text())
            if not isinstance(info, dict):
                raise TypeError(f"holds a {type(info).__name__}, not an object")
        except (ValueError, TypeError, OSError, UnicodeDecodeError) as err:
            raise _corrupt(self.run_json, err) from None
        return info

    # ------------------------------------------------------------------- writing
    def write_run_info(self, info: dict[str, Any]) -> None:
        self.create()
        atomic_write_text(self.run_json, json.dumps(info, indent=2, default=str) + "\n")

    def _write_measurements(self, df: pd.DataFrame) -> None:
        df = df.reset_index(drop=True)
        atomic_write(self.measurements_parquet, lambda tmp: df.to_parquet(tmp, index=False))
        atomic_write_text(self.measurements_csv, _frame_bytes_csv(df))

    def _write_summary(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.summary_csv, _frame_bytes_csv(df.reset_index(drop=True)))

    def append(self, key: ConfigKey, measurements: Iterable[dict[str, Any]], summary: dict[str, Any]) -> None:
        """Record one finished configuration: its measurement rows, then (the commit
        point) its summary row. Any earlier rows of ``key`` are replaced."""
        self.create()
        new = pd.DataFrame(list(measurements), columns=MEASUREMENT_COLUMNS)
        old = _without_key(self.measurements(), key)
        both = new if old.empty else (old if new.empty else pd.concat([old, new], ignore_index=True))
        self._write_measurements(both.astype({"value": "float64"}))

        row = pd.DataFrame([summary])
        old_summary = _without_key(self.summary(), key)
        merged = row if old_summary.empty else pd.concat([old_summary, row], ignore_index=True)
        self._write_summary(_order_summary(merged))

    def drop_unfinished_measurements(self) -> int:
        """Clean up after a killed attempt: drop measurement rows of configurations without
        a summary row, re-mirror the CSV if the kill fell between the parquet and CSV
        writes, and delete stale temporary files. Returns how many rows were dropped."""
        for tmp in self.dir.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
        df = self.measurements()
        done = set(self.finished())
        keep = [(a, t) in done for a, t in zip(df["accelerator"], df["config_tag"])]
        dropped = len(df) - sum(keep)
        if dropped or (self.measurements_parquet.exists() and self._csv_rows() != len(df)):
            self._write_measurements(df[keep])
        return dropped

    def _csv_rows(self) -> int:
        if not self.measurements_csv.exists():
            return -1
        try:
            return len(pd.read_csv(self.measurements_csv))
        except Exception:  # noqa: BLE001 (a damaged mirror is rewritten from the parquet file)
            return -1

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the run directory (two processes appending to one run
        would overwrite each other's rows). Raises ``RunLocked`` if another process holds it."""
        self.create()
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            yield
            return
        with open(self.dir / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(f"run {self.dir} is in use by another migm-bench process") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def drop_failed(self) -> list[ConfigKey]:
        """Forget failed and partial configurations (so a rerun retries them). Returns their keys."""
        df = self.summary()
        failed = df["status"].isin(RETRY_STATUSES)
        keys = list(zip(df.loc[failed, "accelerator"], df.loc[failed, "config_tag"]))
        if keys:
            self._write_summary(df[~failed])
            self.drop_unfinished_measurements()
        return keys

    def log_error(self, text: str) -> None:
        self.create()
        with open(self.errors_log, "a") as f:
            f.write(text.rstrip() + "\n\n")


def _without_key(df: pd.DataFrame, key: ConfigKey) -> pd.DataFrame:
    if df.empty:
        return df
    return df[~((df["accelerator"].astype(str) == key[0]) & (df["config_tag"].astype(str) == key[1]))]


def _order_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The fixed columns first, then quality-metric columns in name order."""
    for col in SUMMARY_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    extra = sorted(c for c in df.columns if c not in SUMMARY_COLUMNS)
    return df[SUMMARY_COLUMNS + extra]
