"""glibc's allocator, told to keep the memory of freed request bodies for the next request.

With glibc's defaults a request body of a megabyte or more (a 10,000-row batch is 0.8-1.6 MB)
is mapped afresh for each request and unmapped after it, or the heap is trimmed back to the
kernel between requests, and every 4 KB page of the next body costs a page fault: 160-480 per
10,000-row binary request under four clients, about a third of the server's CPU for it
(/proc/<pid>/stat; docs/serving.md has the figures). Keeping those pages in the process costs
no more memory than its busiest moment already took.

A `GLIBC_TUNABLES` that sets either threshold wins: the server then leaves both as given (other
malloc tunables, such as `arena_max`, do not touch them). Other C libraries (musl) have no
`mallopt` and are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["keep_freed_memory"]

log = logging.getLogger("mlops.server")

_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations below this come from the heap, not a fresh mapping: glibc's most on 64-bit,
above the default 16 MB body limit."""
_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
"""Free memory at the top of the heap kept before it goes back to the kernel."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process; whether they were set."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in tunables for name in _TUNABLES):
        log.info("GLIBC_TUNABLES sets malloc's thresholds: leaving them as given")
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
