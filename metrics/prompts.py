"""Prompt sets for text-to-image runs: shipped sets, user files, selection, provenance.

Shipped (``metrics/data/``, upstream files copied verbatim, licences and attribution in
``metrics/data/NOTICE.md``):

* ``parti``: PartiPrompts (google-research/parti, ``PartiPrompts.tsv``, Apache-2.0), 1632
  prompts with a ``Category`` (12, e.g. Animals) and a ``Challenge`` (11, e.g. Basic).
* ``geneval``: GenEval (djghosh13/geneval, ``prompts/evaluation_metadata.jsonl``, MIT), 553
  prompts whose category is the ``tag`` (single_object, two_object, counting, colors,
  position, color_attr).

Any other set (DrawBench included) comes from a user's UTF-8 text file, one prompt per
line (blank lines skipped).

A *spec* selects prompts (what ``--prompts`` takes and ``migm-bench prompts SPEC`` lists)::

    parti                                   all 1632, in file order
    parti:category=Animals,limit=200        the first 200 Animals prompts
    parti:category=animals/vehicles         several categories ('/'), case-insensitive
    parti:challenge=Basic                   PartiPrompts' second axis
    geneval:category=counting
    my_prompts.txt    my_prompts.txt:limit=50

``load_prompts(spec)`` returns a ``PromptSelection``; its ``record()`` is what a run stores
(the spec, the source and its file hash, the filters, the count and a sha256 of the selected
prompts in order), so two runs can tell whether they used the same prompts. Every bad spec
raises ``PromptSpecError`` with a one-line message (near matches for names and categories).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import parse_spec, suggest

DATA_DIR = Path(__file__).parent / "data"
MULTI_SEP = "/"  # several categories in one option: category=Animals/Vehicles


class PromptSpecError(ValueError):
    """A prompt spec that cannot be resolved (unknown set, category or option, bad file)."""


@dataclass(frozen=True)
class PromptSet:
    """A shipped set: ``name``, its data file, how to read it, and its licence/source."""

    name: str
    path: Path
    kind: str  # "parti-tsv" | "geneval-jsonl"
    source: str
    license: str
    axes: tuple[str, ...]  # filter options besides limit, e.g. ("category", "challenge")


SETS: dict[str, PromptSet] = {
    "parti": PromptSet(
        "parti",
        DATA_DIR / "parti" / "PartiPrompts.tsv",
        "parti-tsv",
        "google-research/parti PartiPrompts.tsv",
        "Apache-2.0",
        ("category", "challenge"),
    ),
    "geneval": PromptSet(
        "geneval",
        DATA_DIR / "geneval" / "evaluation_metadata.jsonl",
        "geneval-jsonl",
        "djghosh13/geneval prompts/evaluation_metadata.jsonl",
        "MIT",
        ("category",),
    ),
}


@dataclass(frozen=True)
class PromptItem:
    """One prompt with its labels on each axis (e.g. {"category": "Animals"})."""

    text: str
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, axis: str) -> str:
        return dict(self.labels).get(axis, "")


@dataclass(frozen=True)
class PromptSelection:
    """The prompts a spec selected, in order, with where they came from."""

    spec: str
    source: str  # a shipped set's name, or the resolved path of a user file
    source_hash: str  # sha256 (16 hex) of the source file's bytes
    filters: tuple[tuple[str, tuple[str, ...]], ...]  # (axis, accepted labels) as normalised
    limit: int | None
    items: tuple[PromptItem, ...]
    total: int  # prompts in the source before selection

    @property
    def prompts(self) -> list[str]:
        return [item.text for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sha256(self) -> str:
        """sha256 (16 hex) of the selected prompts joined by newlines, in order."""
        return prompts_hash(self.prompts)

    def record(self) -> dict[str, Any]:
        """JSON-able provenance for run.json."""
        return {
            "spec": self.spec,
            "source": self.source,
            "source_sha256": self.source_hash,
            "filters": {axis: list(labels) for axis, labels in self.filters},
            "limit": self.limit,
            "count": len(self.items),
            "of": self.total,
            "prompts_sha256": self.sha256,
        }


def prompts_hash(prompts: list[str]) -> str:
    """sha256 (first 16 hex digits) of the prompts joined by newlines."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ------------------------------------------------------------------------ readers
def _read_parti(path: Path) -> list[PromptItem]:
    """PartiPrompts.tsv: header Prompt, Category, Challenge, Note. Split on tabs without CSV
    quoting: one prompt starts with a quoted word ('"G I G G L E" painted ...') that a CSV
    reader would strip."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    if header[:3] != ["Prompt", "Category", "Challenge"]:
        raise PromptSpecError(
            f"{path}: unexpected header {header!r} (expected Prompt, Category, Challenge, Note)"
        )
    items = []
    for line in lines[1:]:
        if not line.strip():
            continue
        prompt, category, challenge = (line.split("\t") + ["", ""])[:3]
        items.append(PromptItem(prompt, (("category", category), ("challenge", challenge))))
    return items


def _read_geneval(path: Path) -> list[PromptItem]:
    """evaluation_metadata.jsonl: one JSON object per line with "prompt" and "tag"."""
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(PromptItem(row["prompt"], (("category", row["tag"]),)))
    return items


def read_set(name: str) -> list[PromptItem]:
    """Every prompt of a shipped set, in file order."""
    if name not in SETS:
        raise PromptSpecError(f"unknown prompt set {name!r}.{suggest(name, SETS)}")
    pset = SETS[name]
    return _read_parti(pset.path) if pset.kind == "parti-tsv" else _read_geneval(pset.path)


def read_prompt_file(path: str | Path) -> list[PromptItem]:
    """A user's prompt file: UTF-8, one prompt per line, blank lines skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PromptSpecError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptSpecError(
            f"prompt file {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    items = [PromptItem(line.strip()) for line in text.splitlines() if line.strip()]
    if not items:
        raise PromptSpecError(f"prompt file {path} holds no prompts (one prompt per line expected)")
    return items


def categories(name: str, axis: str = "category") -> dict[str, int]:
    """Labels of a shipped set on ``axis`` with their prompt counts, in first-seen order."""
    counts: dict[str, int] = {}
    for item in read_set(name):
        counts[item.label(axis)] = counts.get(item.label(axis), 0) + 1
    return counts


# ------------------------------------------------------------------------ selection
def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or Path(name).suffix != "" or name.startswith(("~", "."))


def _split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'name:options'; a shipped set's name wins, then a whole existing file path (which may
    hold ':'), then 'path:options'."""
    name = spec.partition(":")[0].strip()
    if name not in SETS and Path(spec).expanduser().is_file():
        return spec, {}
    try:
        return parse_spec(spec)
    except ValueError as err:
        raise PromptSpecError(str(err)) from None


def _match_labels(axis: str, wanted: str, available: dict[str, int], where: str) -> tuple[str, ...]:
    by_lower = {label.lower(): label for label in available}
    out = []
    for part in filter(None, (p.strip() for p in wanted.split(MULTI_SEP))):
        if part.lower() not in by_lower:
            raise PromptSpecError(f"{where}: unknown {axis} {part!r}.{suggest(part, available)}")
        out.append(by_lower[part.lower()])
    if not out:
        raise PromptSpecError(f"{where}: empty {axis}= option")
    return tuple(dict.fromkeys(out))


def load_prompts(spec: str) -> PromptSelection:
    """Resolve a prompt spec (see the module docstring) to the selected prompts.

    Raises PromptSpecError (one line) for an unknown set (with near matches), a missing or
    unreadable file, an unknown option or category, a bad limit, or an empty selection.
    """
    spec = str(spec).strip()
    if not spec:
        raise PromptSpecError("empty prompt spec: give a set name (parti, geneval) or a prompt file path")
    name, options = _split_spec(spec)
    if name in SETS:
        pset = SETS[name]
        items, axes, source, source_hash = read_set(name), pset.axes, name, _file_hash(pset.path)
    elif Path(name).expanduser().is_file() or _looks_like_path(name):
        path = Path(name).expanduser()
        items, axes = read_prompt_file(path), ()
        source, source_hash = str(path.resolve()), _file_hash(path)
    else:
        raise PromptSpecError(
            f"unknown prompt set {name!r}.{suggest(name, SETS)} (or give the path of a prompt file, one per line)"
        )
    where = f"prompts {spec!r}"
    allowed = (*axes, "limit")
    for key in options:
        if key not in allowed:
            raise PromptSpecError(f"{where}: unknown option {key!r}.{suggest(key, allowed)}")

    filters: list[tuple[str, tuple[str, ...]]] = []
    for axis in axes:
        if axis in options:
            available: dict[str, int] = {}
            for item in items:
                available[item.label(axis)] = available.get(item.label(axis), 0) + 1
            filters.append((axis, _match_labels(axis, options[axis], available, where)))
    selected = [item for item in items if all(item.label(axis) in labels for axis, labels in filters)]

    limit = None
    if "limit" in options:
        try:
            limit = int(options["limit"])
        except ValueError:
            raise PromptSpecError(f"{where}: limit must be an integer, got {options['limit']!r}") from None
        if limit < 1:
            raise PromptSpecError(f"{where}: limit must be >= 1, got {limit}")
        selected = selected[:limit]
    if not selected:
        raise PromptSpecError(f"{where} selects no prompts")
    return PromptSelection(spec, source, source_hash, tuple(filters), limit, tuple(selected), len(items))
