"""rules.yaml read and written by the tests with libyaml, PyYAML's C parser and emitter.

The tests write a configuration of their own for almost every test (`write_config`: the
shipped rules.yaml with the test's servers): the pure-Python parser and emitter took about
0.2 s of CPU for each, the C ones (what mailbot itself reads rules.yaml with,
``mailbot/yamlfile.py``) a tenth of it, for the same data and the same text.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_rules(path: Path = ROOT / "rules.yaml") -> Any:
    """``yaml.safe_load`` of the file, by libyaml; a text read before is not parsed again
    (~25 ms of CPU each time: the shipped rules.yaml, read for every test that writes a
    configuration). Each call gets a value of its own, since the tests change it."""
    return pickle.loads(_parsed(path.read_text(encoding="utf-8")))


@lru_cache(maxsize=8)
def _parsed(text: str) -> bytes:
    """The text's value, pickled: unpickling copies it in ~0.1 ms (deepcopy: 1 ms)."""
    return pickle.dumps(yaml.load(text, Loader=_LOADER))


def dump_rules(data: Any, *, sort_keys: bool = True) -> str:
    """``yaml.safe_dump(data, allow_unicode=True, sort_keys=sort_keys)``, by libyaml: the
    same text. Unsorted, the mappings keep their order (the services', which the console
    offers in that order, the first one chosen by default)."""
    return yaml.dump(data, Dumper=_DUMPER, allow_unicode=True, sort_keys=sort_keys)
