"""Guards against silent wrong results and lost files (issue 10).

* run names: a run name is one path component; names derived from specs are flattened;
* run folders: a folder that is not a migm-bench run folder is never written into;
* sweep files: read bounded (size, text, nesting), no YAML aliases, duplicate keys are errors;
* numbers: NaN / inf in an accelerator's logits or features are caught at the step where
  they first appear (``FiniteTap``), and metric values must be finite.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # the CLI imports this module; torch is needed only by a run
    import torch

    from bench.protocol import StepOutput

MAX_SWEEP_FILE_BYTES = 1 << 20  # a sweep file is a few lines; anything near 1 MiB is not one
RUN_FOLDER_MARKERS = ("run.json",)  # a folder holding these (readable) is a run folder
RUN_FOLDER_ALLOWED = (".lock",)  # what an interrupted first attempt may leave behind


class GuardError(ValueError):
    """A user error found by a guard (bad name, foreign folder, bad sweep file); one line."""


class NonFiniteError(RuntimeError):
    """NaN or inf in logits, features or a metric value."""


class PluginExit(RuntimeError):
    """A plugin called sys.exit: a failure of that configuration, not the end of the sweep."""


# --------------------------------------------------------------------------- names
def check_run_name(name: str) -> str:
    """``name`` if it is a single, ordinary path component, else GuardError."""
    if not isinstance(name, str) or not name.strip():
        raise GuardError(f"run name {name!r} must be a non-empty string")
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name or Path(name).is_absolute():
        raise GuardError(
            f"run name {name!r} must be a single folder name (no '/', '\\', '..' or absolute paths); "
            "use --out for the parent folder"
        )
    if len(name.encode()) > 200:
        raise GuardError(f"run name {name[:40]!r}... is too long ({len(name.encode())} bytes, at most 200)")
    return name


def flatten_name(text: str) -> str:
    """A derived name made safe as one path component: path separators and other unsafe
    characters become '_', leading dots are dropped, long names are cut."""
    flat = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_").lstrip(".")
    return (flat or "run")[:200]


# --------------------------------------------------------------------- run folders
def check_run_folder(folder: Path) -> bool:
    """True if ``folder`` may be used as a run folder and already exists. A missing folder
    is fine (False); an existing one must be empty (apart from an interrupted attempt's
    lock) or hold a readable ``run.json`` of migm-bench."""
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise GuardError(f"{folder} exists and is not a folder; choose another --name or --out")
    entries = {p.name for p in folder.iterdir()}
    if entries <= set(RUN_FOLDER_ALLOWED):
        return True
    run_json = folder / "run.json"
    if not run_json.is_file():
        raise GuardError(
            f"{folder} exists and is not a migm-bench run folder (no run.json); nothing written. "
            "Choose another --name or --out"
        )
    try:
        info = json.loads(run_json.read_text())
    except (OSError, ValueError) as err:
        raise GuardError(
            f"{run_json} is corrupt ({type(err).__name__}: {' '.join(str(err).split())}); "
            "move the run folder away or choose another --name"
        ) from None
    if not isinstance(info, dict) or "compat" not in info:
        raise GuardError(f"{run_json} is not a migm-bench run.json; choose another --name or --out")
    return True


def remove_if_unused(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but a lock file (a run that never started)."""
    try:
        if folder.is_dir() and {p.name for p in folder.iterdir()} <= set(RUN_FOLDER_ALLOWED):
            for name in RUN_FOLDER_ALLOWED:
                (folder / name).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


# --------------------------------------------------------------------- sweep files
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases (no billion laughs, no recursive structures) and with
    duplicate mapping keys reported instead of silently overwritten."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in sweep files", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: the constructor reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_sweep_yaml(path: str) -> Any:
    """Parse a sweep file: at most MAX_SWEEP_FILE_BYTES of UTF-8 text, strict YAML."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SWEEP_FILE_BYTES + 1)
    except OSError as err:
        raise GuardError(f"cannot read sweep file {path}: {err.strerror or err}") from None
    if len(raw) > MAX_SWEEP_FILE_BYTES:
        raise GuardError(f"sweep file {path} is larger than {MAX_SWEEP_FILE_BYTES} bytes; not a sweep file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GuardError(f"sweep file {path} is not UTF-8 text (a binary file?)") from None
    if "\0" in text:
        raise GuardError(f"sweep file {path} is not a text file (it holds NUL bytes)")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        raise GuardError(f"sweep file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise GuardError(f"sweep file {path} is nested too deeply") from None


# ------------------------------------------------------------------------ numbers
class FiniteTap:
    """Records, per step, whether an accelerator's logits and features are finite.

    ``watch(step, out)`` (the sampling loop's ``on_step``) costs one reduction per tensor and
    no host sync; ``check`` (after the batch, outside the timed region) raises
    NonFiniteError naming the first bad step. ``reset`` before every sampling call."""

    def __init__(self) -> None:
        self.flags: list[tuple[int, str, torch.Tensor]] = []

    def reset(self) -> None:
        self.flags = []

    def watch(self, step: int, out: StepOutput) -> None:
        self.flags.append((step, "logits", out.logits.isfinite().all()))
        if out.features is not None:
            self.flags.append((step, "features", out.features.isfinite().all()))

    def check(self, who: str) -> None:
        for step, what, ok in self.flags:
            if not bool(ok):
                raise NonFiniteError(f"{who}: NaN/inf in the {what} of step {step}")


def check_finite_value(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteError(f"metric {name} returned {value}")
    return value


# ------------------------------------------------------------------------- errors
@contextlib.contextmanager
def no_exit() -> Iterator[None]:
    """A plugin's sys.exit while sampling becomes an ordinary error of that configuration."""
    try:
        yield
    except SystemExit as err:
        raise PluginExit(f"a plugin called sys.exit({err.code!r})") from err


def error_line(err: BaseException, where: bool = True) -> str:
    """'ValueError: message (at file.py:12 in fn)': the exception and where it was raised."""
    msg = " ".join(f"{type(err).__name__}: {err}".split())
    frames = traceback.extract_tb(err.__traceback__)
    if frames and where:
        last = frames[-1]
        msg += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return msg
