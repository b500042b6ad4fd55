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
_MERGE = "tag:yaml.org,2002:merge"


def _refuse_duplicates(node: yaml.Node) -> None:
    """A key written twice in one mapping is an error: YAML's loaders keep the last one
    silently, and a block pasted twice in rules.yaml replaced the first (a mailbox, a
    service) without a word. Keys a merge (``<<``) brings may be overridden, as YAML means."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
            continue
        first = seen.setdefault((key.tag, key.value), key)
        if first is not key:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found duplicate key {key.value!r} (first on line {first.start_mark.line + 1})",
                key.start_mark,
            )


class _FastLoader(_FAST):  # type: ignore[misc,valid-type]
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        _refuse_duplicates(node)
        return super().construct_mapping(node, deep=deep)


class _ReferenceLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        _refuse_duplicates(node)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, faster, duplicate keys refused; raises the same
    ``yaml.YAMLError`` on bad input."""
    try:
        return yaml.load(text, Loader=_FastLoader)  # a safe loader: no Python objects
    except yaml.YAMLError:
        return yaml.load(text, Loader=_ReferenceLoader)  # the error worded by the reference
