"""Give memory the models no longer use back to the operating system between steps.

The nightly job runs every asset in one process. CPython frees pandas and numpy buffers, but glibc keeps
freed heap pages mapped until asked, so the next step starts from the previous step's high-water mark
and peaks stack up (at a million customers: the churn step started where the value models had left
the heap). ``release_memory`` trims the heap (milliseconds; a no-op where glibc is absent) and asks Arrow's
memory pool (mimalloc here), which holds the text columns pandas reads from DuckDB, to return what it keeps
for reuse (at a million customers' churn reasons: 150 MB of 190 MB). It does not force a garbage collection:
the frames are freed by reference counting, and a full collection in a process holding Dagster and Great
Expectations objects costs more than it returns.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    if _TRIM is not None:
        _TRIM(0)
    arrow = sys.modules.get("pyarrow")  # never imported here for this: loaded by the steps that read frames
    if arrow is not None:
        arrow.default_memory_pool().release_unused()
