"""Strict YAML reading for job specs: syntax errors and duplicate keys name the line.

PyYAML keeps the last of two equal keys silently; a spec with ``lr`` written twice would run
with whichever came last. :func:`load_yaml` refuses it instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recmind_dist.errors import InputError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that raises on a mapping with a repeated key."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})",
                key_node.start_mark)
        seen[key] = line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(text: str, source: str | Path, field: str | None = None) -> Any:
    """Parse ``text``; a syntax error or duplicate key is an :class:`InputError` naming
    ``source`` (and ``field``) with the line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(source, field, f"malformed YAML ({where}{problem})") from None
