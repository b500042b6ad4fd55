"""The suite's list of its longest tests (conftest.LONG_TESTS, dealt to the front of each
xdist worker's share) names tests that exist: a renamed test silently fell off the list and
started wherever its file lay, running alone at the end of a run."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import LONG_TESTS, WHOLE_FILES

ROOT = Path(__file__).resolve().parent.parent


def test_every_long_test_named_exists() -> None:
    for nodeid in LONG_TESTS:
        path, _, prefix = nodeid.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(prefix)}\w*\(", source, re.M), nodeid


def test_every_whole_file_named_exists_and_is_no_long_test() -> None:
    """A file kept whole (conftest.WHOLE_FILES) that no longer exists only loses its place;
    a long test in one would be taken out of it, its module fixtures set up again."""
    for path in WHOLE_FILES:
        assert (ROOT / path).is_file(), path
        assert not [name for name in LONG_TESTS if name.startswith(path + "::")], path
