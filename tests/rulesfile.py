"""rules.yaml read and written by the tests with libyaml, PyYAML's C parser and emitter.

The tests write a configuration of their own for almost every test (`write_config`: the
shipped rules.yaml with the test's servers): the pure-Python parser and emitter took about
0.2 s of CPU for each, the C ones (what mailbot itself reads rules.yaml with,
``mailbot/yamlfile.py``) a tenth of it, for the same data and the same text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load_rules(path: Path = ROOT / "rules.yaml") -> Any:
    """``yaml.safe_load`` of the file, by libyaml."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


def dump_rules(data: Any) -> str:
    """``yaml.safe_dump(data, allow_unicode=True)``, by libyaml: the same text."""
    return yaml.dump(data, Dumper=_DUMPER, allow_unicode=True)
