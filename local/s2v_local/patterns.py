"""The subset of EventBridge / Lambda event-filter patterns that s2v's template uses. Pure.

A pattern is a JSON object whose leaves are lists of allowed values. A leaf matches when the
event's value (or any element, when the event holds an array there) equals one of the literals
or satisfies one of the operators: ``{"exists": bool}``, ``{"prefix": str}`` and
``{"anything-but": value | [values] | {"prefix": str}}``. Anything else is rejected up front,
so an unsupported pattern fails at start-up instead of silently filtering everything out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


class PatternError(ValueError):
    """The pattern uses syntax outside the supported subset."""


_MISSING = object()
_OPERATORS = ("exists", "prefix", "anything-but")


def parse(text: str) -> dict[str, Any]:
    """Parse and validate a pattern as written in FilterCriteria.Filters[].Pattern."""
    try:
        pattern = json.loads(text)
    except ValueError as exc:
        raise PatternError(f"filter pattern is not JSON: {text!r}") from exc
    validate(pattern)
    return pattern


def validate(pattern: Any, path: str = "$") -> None:
    if not isinstance(pattern, Mapping) or not pattern:
        raise PatternError(f"{path}: a pattern must be a non-empty JSON object")
    for key, value in pattern.items():
        where = f"{path}.{key}"
        if isinstance(value, Mapping):
            validate(value, where)
        elif isinstance(value, list):
            if not value:
                raise PatternError(f"{where}: an empty list matches nothing")
            for rule in value:
                _validate_rule(rule, where)
        else:
            raise PatternError(f"{where}: leaf values must be lists, got {value!r}")


def _validate_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, Mapping):
        if isinstance(rule, list):
            raise PatternError(f"{where}: nested lists are not allowed")
        return
    if len(rule) != 1 or next(iter(rule)) not in _OPERATORS:
        raise PatternError(f"{where}: unsupported operator {rule!r} (supported: {', '.join(_OPERATORS)})")
    (operator, operand), = rule.items()
    if operator == "exists" and not isinstance(operand, bool):
        raise PatternError(f"{where}: exists takes true or false")
    if operator == "prefix" and not isinstance(operand, str):
        raise PatternError(f"{where}: prefix takes a string")
    if operator == "anything-but" and isinstance(operand, Mapping) and (
        set(operand) != {"prefix"} or not isinstance(operand["prefix"], str)
    ):
        raise PatternError(f"{where}: anything-but takes a value, a list of values or {{\"prefix\": str}}")


def matches(pattern: Mapping[str, Any], event: Any) -> bool:
    return _match_object(pattern, event)


def matches_any(patterns: Iterable[Mapping[str, Any]], event: Any) -> bool:
    """Lambda's rule: no filters means everything passes; otherwise any one filter must match."""
    patterns = list(patterns)
    return not patterns or any(matches(p, event) for p in patterns)


def _match_object(pattern: Mapping[str, Any], event: Any) -> bool:
    return all(_match_field(rules, _child(event, key)) for key, rules in pattern.items())


def _child(event: Any, key: str) -> Any:
    return event.get(key, _MISSING) if isinstance(event, Mapping) else _MISSING


def _match_field(rules: Any, value: Any) -> bool:
    if isinstance(rules, Mapping):
        return _match_object(rules, value)
    if value is _MISSING:
        return any(rule == {"exists": False} for rule in rules)
    candidates = value if isinstance(value, list) else [value]
    return any(_match_rule(rule, candidate) for rule in rules for candidate in candidates)


def _match_rule(rule: Any, value: Any) -> bool:
    if not isinstance(rule, Mapping):
        return _equal(rule, value)
    (operator, operand), = rule.items()
    if operator == "exists":
        return operand is True
    if operator == "prefix":
        return isinstance(value, str) and value.startswith(operand)
    # anything-but
    if isinstance(operand, Mapping):
        return not (isinstance(value, str) and value.startswith(operand["prefix"]))
    excluded = operand if isinstance(operand, list) else [operand]
    return not any(_equal(e, value) for e in excluded)


def _equal(literal: Any, value: Any) -> bool:
    # JSON semantics: true is not 1, and 1 equals 1.0.
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(literal, bool) and isinstance(value, bool) and literal == value
    if isinstance(literal, int | float) and isinstance(value, int | float):
        return float(literal) == float(value)
    return type(literal) is type(value) and literal == value
