"""Freed memory kept for reuse by the training process (glibc's malloc).

Each training step allocates and frees the same few activation buffers of several megabytes.
glibc serves blocks above its mmap threshold (128 KiB at start, raised only once a block that
large has been freed) with fresh mmap'd pages, so until then every step pays page faults for
them: measured on a 2-core machine, epochs of the default recipe took 10-13 % longer than with a
fixed high threshold, and the first epoch (before validation had freed a large block) the most.
No maintained library sets this from inside a running process (the usual fix is preloading
jemalloc or tcmalloc, or MALLOC_* variables set before Python starts), hence the two `mallopt`
calls through ctypes; on other C libraries (macOS, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>: free memory at the heap's top kept before trimming
M_MMAP_THRESHOLD = -3  # blocks at least this large come from mmap, and go back to the OS on free
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks up to 32 MiB in the heap for reuse; True when it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc's
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not done:
        logger.debug("malloc thresholds not set: this C library refused mallopt")
    return done
