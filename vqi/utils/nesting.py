"""How deeply parsed JSON nests, walked without recursion: Python's parser and every recursive
walk (repr, str, deepcopy) fail on deep nesting, so a document from outside is measured first."""
from __future__ import annotations

MAX_JSON_DEPTH = 64
"""Deeper JSON is refused: real annotations and tool exports nest fewer than 10 levels."""


def json_depth(doc: object) -> int:
    """Nesting depth of parsed JSON (a scalar: 0, `[]`: 1)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
