"""bench.timing: interleaved replicates (paired calls) and keeping freed memory (no page faults
for memory malloc gave back to the kernel)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.timing import interleaved_replicates

REPO = Path(__file__).resolve().parents[1]


def test_interleaved_replicates_alternate_the_order_and_pair_the_calls():
    calls: list[str] = []
    times = interleaved_replicates(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu", replicates=4, warmup=1
    )
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then alternating
    assert [len(v) for v in times.values()] == [4, 4] and all(t > 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match="replicates"):
        interleaved_replicates({"a": lambda: None}, "cpu", replicates=0)


def test_keep_freed_memory_turns_trimming_off_and_fixes_the_mmap_threshold(monkeypatch):
    from bench import timing

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(timing.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(timing.ctypes, "CDLL", lambda name: FakeLibc())
    assert timing.keep_freed_memory()
    assert calls == [(-1, 2**31 - 1), (-3, 32 * 2**20)]  # M_TRIM_THRESHOLD: never; M_MMAP_THRESHOLD: 32 MiB
    monkeypatch.setattr(timing.platform, "libc_ver", lambda: ("", ""))
    assert not timing.keep_freed_memory() and len(calls) == 2  # not glibc: nothing done


# Eight 4 MiB blocks allocated, touched and freed, over and over. Kept, the heap settles after a
# few cycles (its holes coalesce) and is then reused as it is: no page faults. (glibc's default
# gives the freed heap top back to the kernel whenever no live block sits above it, and every
# cycle then faults all 8192 pages in again, as a full step did after cheap shortcut steps;
# whether one does depends on the heap's history, so that side is not asserted.)
FAULT_PROBE = textwrap.dedent(
    """
    import torch
    from bench.timing import keep_freed_memory, minor_faults

    assert keep_freed_memory()

    def cycle():
        blocks = [torch.ones(2**20) for _ in range(8)]  # touched: every page faulted in once
        del blocks

    minor_faults()  # its first call imports a module: not between the warm-up and the count
    for _ in range(10):  # warm-up: the heap settles
        cycle()
    before = minor_faults()
    for _ in range(3):
        cycle()
    print(minor_faults() - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc settings are glibc's")
def test_kept_memory_is_reused_without_page_faults(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(FAULT_PROBE)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    pages = 3 * 8 * 1024  # three cycles of eight 4 MiB blocks
    assert int(done.stdout.split()[-1]) < pages // 20
