"""The suite's list of its longest tests (conftest.LONG_TESTS, dealt to the front of each
xdist worker's share) names tests that exist: a renamed test silently fell off the list and
started wherever its file lay, running alone at the end of a run."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def suite_conftest(request: pytest.FixtureRequest) -> ModuleType:
    """tests/conftest.py as pytest loaded it: `from conftest import …` found
    tests/web/conftest.py instead whenever a web file was collected first."""
    wanted = ROOT / "tests" / "conftest.py"
    for plugin in request.config.pluginmanager.get_plugins():
        if isinstance(plugin, ModuleType) and Path(plugin.__file__ or "") == wanted:
            return plugin
    raise AssertionError(f"{wanted} is not loaded")


def test_every_long_test_named_exists(suite_conftest: ModuleType) -> None:
    for nodeid in suite_conftest.LONG_TESTS:
        path, _, prefix = nodeid.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {re.escape(prefix)}\w*\(", source, re.M), nodeid


def test_every_whole_file_named_exists_and_is_no_long_test(suite_conftest: ModuleType) -> None:
    """A file kept whole (conftest.WHOLE_FILES) that no longer exists only loses its place;
    a long test in one would be taken out of it, its module fixtures set up again."""
    for path in suite_conftest.WHOLE_FILES:
        assert (ROOT / path).is_file(), path
        assert not [name for name in suite_conftest.LONG_TESTS if name.startswith(path + "::")], (
            path
        )
