"""Content hashes of shipped weight files: a changed byte is an error naming the file.

Every folder of shipped weights holds ``INTEGRITY.json`` beside the files::

    {"algorithm": "sha256", "files": {"maskgit.safetensors": "<64 hex digits>", ...}}

Loaders call ``verify(path)`` before reading a weights file: when the file's folder has a
manifest that lists it, its sha256 must match, else ``IntegrityError`` names the file and
both hashes. Files the manifest does not list (user-trained weights elsewhere) are not
checked. Training commands that write into a folder with a manifest update its entry
(``record``); after replacing shipped files by other means, regenerate the manifests with

    python -m bench.integrity update base_models/fashion/weights accelerators/shortcut/weights

(``python -m bench.integrity check DIR...`` verifies them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

MANIFEST = "INTEGRITY.json"
PATTERNS = ("*.safetensors", "*.pth", "*.pt", "*.ckpt")  # what ``update`` lists
UPDATE_COMMAND = "python -m bench.integrity update base_models/fashion/weights accelerators/shortcut/weights"

_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


class IntegrityError(ValueError):
    """A shipped file whose bytes differ from the hash stored in its folder's manifest."""


def sha256(path: str | os.PathLike) -> str:
    """Full sha256 hex digest of a file (cached per path, size and mtime)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]


def read_manifest(folder: str | os.PathLike) -> dict[str, str]:
    """{file name: sha256} of ``folder``'s manifest ({} when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IntegrityError(
            f"{path}: unreadable integrity manifest ({err}); regenerate it: {UPDATE_COMMAND}"
        ) from None
    return {str(k): str(v) for k, v in files.items()}


def verify(path: str | os.PathLike) -> None:
    """Raise ``IntegrityError`` if ``path`` is listed in its folder's manifest with another hash."""
    path = Path(path)
    expected = read_manifest(path.parent).get(path.name)
    if expected is None or not path.is_file():
        return
    actual = sha256(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: contents changed (sha256 {actual[:16]}..., manifest {path.parent / MANIFEST} says "
            f"{expected[:16]}...); the file is corrupt or was replaced. Restore it (git checkout -- {path}) "
            f"or, if the new file is intended, run: python -m bench.integrity update {path.parent}"
        )


def _write(folder: Path, files: dict[str, str]) -> None:
    # imported here: bench.results needs pandas, which the CLI's start-up (IntegrityError) does not
    from bench.results import atomic_write_text

    text = json.dumps({"algorithm": "sha256", "files": dict(sorted(files.items()))}, indent=2) + "\n"
    atomic_write_text(folder / MANIFEST, text)


def record(path: str | os.PathLike) -> bool:
    """After writing ``path``: update its entry if its folder keeps a manifest. True if updated."""
    path = Path(path)
    if not (path.parent / MANIFEST).is_file():
        return False
    files = read_manifest(path.parent)
    files[path.name] = sha256(path)
    _write(path.parent, files)
    return True


def update(folder: str | os.PathLike) -> dict[str, str]:
    """(Re)write ``folder``'s manifest from the weight files it holds now."""
    folder = Path(folder)
    names = sorted({p.name for pattern in PATTERNS for p in folder.glob(pattern) if p.is_file()})
    files = {name: sha256(folder / name) for name in names}
    _write(folder, files)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.integrity", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["update", "check"])
    parser.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for folder in map(Path, args.folders):
        if not folder.is_dir():
            print(f"bench.integrity: error: {folder} is not a folder", file=sys.stderr)
            return 2
        if args.action == "update":
            for name, digest in update(folder).items():
                print(f"{digest}  {folder / name}")
            continue
        try:
            listed = read_manifest(folder)
            for name in listed:
                verify(folder / name)
                print(f"ok  {folder / name}")
        except IntegrityError as err:
            print(f"bench.integrity: error: {err}", file=sys.stderr)
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
