"""training/memory.py: after `keep_freed_memory`, a training-sized buffer comes from the heap
(reused step after step) instead of fresh mmap'd pages. Each case runs in a fresh interpreter,
whose malloc has not yet raised its threshold on its own."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

# Bytes malloc holds in mmap'd blocks before and after allocating an 8 MiB buffer (glibc's
# mallinfo2; hblkhd is its fifth field).
PROBE = """
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    from bitmoji_ml.training.memory import keep_freed_memory
    assert keep_freed_memory()
before = libc.mallinfo2().hblkhd
buffer = bytearray(8 << 20)
print(libc.mallinfo2().hblkhd - before)
"""


def mmapped_growth(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_training_sized_buffer_comes_from_the_heap_once_freed_memory_is_kept() -> None:
    assert mmapped_growth("default") >= 8 << 20  # the check sees malloc's own choice
    assert mmapped_growth("keep") == 0
