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


# Eight 4 MiB blocks allocated, touched and freed, over and over. glibc's default gives the freed
# heap top back to the kernel (it exceeds the trim threshold), so every cycle page-faults all
# of it in again, as a full step did after cheap shortcut steps. Kept, the heap settles after a
# few cycles (its holes coalesce) and is then reused as it is.
FAULT_PROBE = textwrap.dedent(
    """
    import sys
    import torch
    from bench.timing import keep_freed_memory, minor_faults

    if sys.argv[1] == "keep":
        assert keep_freed_memory()

    def cycle():
        blocks = [torch.ones(2**20) for _ in range(8)]  # touched: every page faulted in once
        del blocks

    for _ in range(6):  # warm-up: the heap settles
        cycle()
    before = minor_faults()
    for _ in range(3):
        cycle()
    print(minor_faults() - before)
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc settings are glibc's")
def test_keep_freed_memory_stops_refaulting_freed_blocks(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(FAULT_PROBE)

    def faults(mode: str) -> int:
        done = subprocess.run([sys.executable, str(script), mode], cwd=REPO, capture_output=True, text=True,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
        return int(done.stdout.split()[-1])

    pages = 3 * 8 * 1024  # three cycles of eight 4 MiB blocks
    assert faults("default") > pages // 2  # the probe does see malloc's give-back (else it tests nothing)
    assert faults("keep") < pages // 20  # kept: the heap is reused, next to no page faults
