"""The C heap of a worker: large buffers handed back to the system once freed (issue 14).

glibc's malloc serves a request of 128 KiB or more with a mapping of its own, unmapped on
free, but only until it frees the first one: it then raises that threshold to the freed
size (up to 32 MiB on 64-bit) and serves the requests under it from the heap, where a
freed buffer leaves a gap that the small objects allocated meanwhile keep from being given
back. A worker allocates and frees such buffers as it reads and sends mail in bulk, and
the peak RSS of `poll --once` grew with the backlog while Python's own objects did not
(bench/rss.py --trace: 12-13 MB traced from the 12th batch of 200 to the 100th): 1.09-1.12x
for 20,000 mails against 1,000 (bench/run.py (c)), at or over the 1.10x target.

Setting the threshold explicitly turns that adjustment off (mallopt(3)): buffers of
128 KiB or more are mapped and unmapped each time. The ratio was then 1.06-1.08x in the
same run, with no change in throughput (bench/README.md, "Issue 14, thirty-third
session"). On another C library this does nothing.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, held fixed


def map_large_buffers() -> bool:
    """Keep buffers of MMAP_THRESHOLD bytes or more out of the heap, in this process and
    in those it forks from now on; True when the C library took the setting (glibc)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # not glibc (musl, macOS): its own malloc, left alone
        return False
    import ctypes

    try:
        taken = bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
    except (OSError, AttributeError):
        return False
    if not taken:
        log.debug("malloc refused a fixed mmap threshold", extra={"bytes": MMAP_THRESHOLD})
    return taken
