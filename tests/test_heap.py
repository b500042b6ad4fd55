"""mailbot/heap.py: a worker's large buffers are mapped and unmapped, never left in the
heap, even after a larger one was freed (glibc's dynamic threshold turned off)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A fresh interpreter (the test process's malloc is left alone): free a 4 MiB buffer, which
# glibc takes as its new threshold unless it was fixed, then print how many bytes of a
# 300 KiB buffer allocated after it are in mappings of their own.
CHILD = """
import ctypes, sys
from mailbot.heap import map_large_buffers

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert map_large_buffers()
freed = bytearray(4 << 20)
del freed
before = libc.mallinfo2().hblkhd
kept = bytearray(300 * 1024)
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_after_a_larger_free(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, check=True
    )
    return int(done.stdout.strip())


def glibc() -> bool:
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return False
    return True


@pytest.mark.skipif(not glibc(), reason="mallopt's threshold is glibc's (the CI runs Debian)")
def test_a_large_buffer_is_mapped_even_after_a_larger_one_was_freed() -> None:
    # glibc's default: the 4 MiB buffer freed, the 300 KiB one comes from the heap.
    assert mapped_after_a_larger_free("default") == 0
    assert mapped_after_a_larger_free("fixed") >= 300 * 1024


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailbot import heap

    def not_glibc(name: str) -> str:
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "confstr", not_glibc)
    assert heap.map_large_buffers() is False
