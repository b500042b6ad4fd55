"""YAML read with libyaml when PyYAML has it: rules.yaml and the templates' meta.yaml are
read at every start, and the pure-Python parser took most of a command's start-up.

The values are those of ``yaml.safe_load`` (the C parser feeds the same safe constructor);
a document that does not parse is parsed again by the pure-Python parser, so that errors
name the same problem, line and column as they always have.
"""

from __future__ import annotations

from typing import Any

import yaml

_FAST = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, faster; raises the same ``yaml.YAMLError`` on bad input."""
    try:
        return yaml.load(text, Loader=_FAST)  # a safe loader: no Python objects
    except yaml.YAMLError:
        return yaml.safe_load(text)  # the same error, worded by the reference parser
