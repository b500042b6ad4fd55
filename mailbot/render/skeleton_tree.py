"""What a template's syntax tree says of rendering it from a skeleton
(``mailbot.render.once``, safeguard 1): where a per-mail value is used otherwise than
printed or tested (``problems``), where the template builds a string it could read again
(``builders``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jinja2 import nodes

from mailbot.render.skeleton_fill import PER_MAIL

_PASS_THROUGH = (nodes.Filter, nodes.Or, nodes.And, nodes.Not, nodes.CondExpr)
_WRITES_TO_VARIABLE = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock)


def _parents(tree: nodes.Node) -> dict[int, nodes.Node]:
    parents: dict[int, nodes.Node] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in node.iter_child_nodes():
            parents[id(child)] = node
            stack.append(child)
    return parents


def _ends_use(parent: nodes.Node, child: nodes.Node) -> bool:
    """Printed, or tested by an ``if``: where a slot's way through a template ends."""
    if isinstance(parent, nodes.If):
        return parent.test is child
    return isinstance(parent, nodes.Output)


def _passes(parent: nodes.Node, child: nodes.Node) -> bool:
    """A node that hands a slot on (filtered, or as it is) without reading it."""
    if isinstance(parent, nodes.Filter):
        return parent.node is child  # a per-mail value as a filter's argument: no
    if isinstance(parent, nodes.Test):
        return parent.node is child and parent.name in {"defined", "undefined"}
    return isinstance(parent, _PASS_THROUGH)


def _allowed_use(node: nodes.Node, parents: Mapping[int, nodes.Node]) -> bool:
    """True when this per-mail name only flows to output or an ``if`` test, through
    filters, and is not printed into a variable or a macro (it could flow anywhere)."""
    child, parent = node, parents.get(id(node))
    while parent is not None and not _ends_use(parent, child):
        if not _passes(parent, child):
            return False
        child, parent = parent, parents.get(id(parent))
    if parent is None:
        return False
    while parent is not None:
        if isinstance(parent, _WRITES_TO_VARIABLE):
            return False
        parent = parents.get(id(parent))
    return True


def problems(tree: nodes.Template, per_mail: Sequence[str] = PER_MAIL) -> list[str]:
    """Why a skeleton of this template could differ from a full render (empty: it cannot,
    given the trace's own checks)."""
    parents = _parents(tree)
    found: list[str] = []
    for name in tree.find_all(nodes.Name):
        if name.name == "self":
            found.append(f"line {name.lineno}: self")
        elif name.name in per_mail and (name.ctx != "load" or not _allowed_use(name, parents)):
            kind = type(parents.get(id(name), name)).__name__
            found.append(f"line {name.lineno}: {name.name} used in {kind}")
    return found


_BUILDERS = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.Concat)


def builders(tree: nodes.Template) -> list[str]:
    """Where a template builds a string it could then read (``{% set %}`` blocks, macros,
    ``~``, ``super()``, ``caller()``). ``problems`` follows PER_MAIL's names through the
    tree; a value reached otherwise (a translated paragraph, an item of a list) is only
    followed by the trace, which sees what is done to a slot but not to a string holding
    its marker: such values need a template that never builds one."""
    found = [f"line {node.lineno}: {type(node).__name__}" for node in tree.find_all(_BUILDERS)]
    for name in tree.find_all(nodes.Name):
        if name.name in {"super", "caller", "self", "varargs", "kwargs"}:
            found.append(f"line {name.lineno}: {name.name}")
    return found
