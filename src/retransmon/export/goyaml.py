"""YAML read the way exporter-toolkit reads its web config: Go's yaml.v2, strict, into typed fields.

Scalars keep their text, so that a string field takes what was written
(``X-XSS-Protection: 1`` is the string "1", ``1.10`` stays "1.10"), while a
boolean or integer field takes only a plain (unquoted) scalar of that type, as
yaml.v2 does. A key given twice in one mapping is an error, as in
``yaml.UnmarshalStrict``; only the first document of a stream is read.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# yaml.v2's YAML 1.1 booleans and nulls (PyYAML's resolver lacks y/n).
_TRUE = frozenset(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"))
_FALSE = frozenset(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"))
_NULL = frozenset(("", "~", "null", "Null", "NULL"))


class Problem(Exception):
    """A problem in the file: one line naming the key."""


class Scalar(str):
    """A scalar's text as written; ``plain`` if it was not quoted (only then can it be a bool or int)."""

    plain: bool
    line: int

    def __new__(cls, text: str, plain: bool, line: int) -> Scalar:
        self = super().__new__(cls, text)
        self.plain = plain
        self.line = line
        return self

    @property
    def is_null(self) -> bool:
        return self.plain and str(self) in _NULL


class _Loader(yaml.SafeLoader):
    """Builds dicts, lists and Scalars; refuses duplicate keys."""


def _construct_scalar(loader: _Loader, node: yaml.ScalarNode) -> Scalar:
    text = loader.construct_scalar(node)
    return Scalar(str(text), plain=node.style is None, line=node.start_mark.line + 1)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise Problem(f"line {key_node.start_mark.line + 1}: a key must be a plain value")
        if key in result:
            raise Problem(f"line {key_node.start_mark.line + 1}: key {str(key)!r} is given twice")
        result[key] = loader.construct_object(value_node, deep=True)
    return result


for _tag in ("str", "int", "float", "bool", "null", "timestamp", "binary"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct_scalar)
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def load(text: str) -> Any:
    """The first document of *text*: dicts (str keys), lists and Scalars; None if empty."""
    try:
        for document in yaml.load_all(text, Loader=_Loader):  # a SafeLoader: plain data only
            return document
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise Problem(f"YAML error{where}: {problem}") from None
    return None


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, Scalar) and value.is_null)


def mapping(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A mapping whose keys are all in *allowed* (null is an empty one)."""
    if is_null(value):
        return {}
    if not isinstance(value, dict):
        raise Problem(f"{where} must be a mapping")
    for key in value:
        if key not in allowed:
            raise Problem(f"unknown key {str(key)!r} in {where}; known: {', '.join(allowed)}")
    return value


def string(value: Any, where: str) -> str:
    """Any scalar's text (null is ""), as yaml.v2 fills a string field."""
    if is_null(value):
        return ""
    if not isinstance(value, Scalar):
        raise Problem(f"{where} must be a string")
    return str(value)


def boolean(value: Any, where: str, default: bool) -> bool:
    if is_null(value):
        return default
    if isinstance(value, Scalar) and value.plain and (value in _TRUE or value in _FALSE):
        return value in _TRUE
    raise Problem(f"{where} must be true or false")


_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


def integer(value: Any, where: str) -> int:
    if is_null(value):
        return 0
    if isinstance(value, Scalar) and value.plain and _INT.fullmatch(value):
        return int(value.replace("_", ""))
    raise Problem(f"{where} must be a whole number")


def string_list(value: Any, where: str) -> list[str]:
    if is_null(value):
        return []
    if not isinstance(value, list):
        raise Problem(f"{where} must be a list")
    return [string(item, f"{where}[{i}]") for i, item in enumerate(value)]


# Go's time.ParseDuration: a sequence of decimal numbers, each with a unit; "0" alone is allowed.
_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


def duration(value: Any, where: str) -> float:
    """Seconds, from a Go duration string ("1s", "1m30s", "250ms") or a whole number of nanoseconds."""
    if is_null(value):
        return 0.0
    if isinstance(value, Scalar) and value.plain and _INT.fullmatch(value):
        return int(value.replace("_", "")) * 1e-9  # yaml.v2 stores an integer as nanoseconds
    text = string(value, where)
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None or match.group(1) in ("", "."):
            raise Problem(f"{where}: {text!r} is not a duration like 1s, 500ms or 1m30s")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise Problem(f"{where}: {text!r} is not a duration like 1s, 500ms or 1m30s")
    return sign * total
