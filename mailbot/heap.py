"""The C heap of a worker: large buffers handed back to the system once freed (issue 14).

glibc's malloc serves a request of 128 KiB or more with a mapping of its own, unmapped on
free, but only until it frees the first one: it then raises that threshold to the freed
size (up to 32 MiB on 64-bit) and serves the requests under it from the heap. A worker
allocates such buffers on every batch (a FETCH response of 200 mails, a delivery's ARs
handed to the SMTP process). From the heap, each left a gap that the small objects
allocated meanwhile kept from being given back. So the peak RSS of `poll --once` grew
with the backlog: 1.10–1.13× for 20,000 mails against 1,000 (bench/run.py (c)), over the
1.10× target, with Python's own objects flat (bench/rss.py --trace).

Setting the threshold explicitly turns that adjustment off (mallopt(3)): buffers of
128 KiB or more are mapped and unmapped each time (a few per batch: a few system calls).
The 20,000/1,000 ratio was then 1.05–1.08× (bench/README.md, "Issue 14, thirty-third
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
