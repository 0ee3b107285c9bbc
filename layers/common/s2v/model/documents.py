"""The one bounded parser for every JSON document a user writes (a ``<stem>.json`` sidecar, a folder's
``_defaults.json``, a ``*.batch.json`` manifest). Pure: no I/O.

Python's ``json`` accepts what no params file needs and some of it is a trap: nesting 5,000 deep
(RecursionError), a number with thousands of digits (slow, then ValueError/OverflowError where it is
converted), ``"\\ud800"`` (a lone surrogate: valid JSON, but not text DynamoDB or S3 can store), or
thousands of keys (every unknown one is then described). Each bound here is checked before or while
parsing, cheaply, and a document past one is an ``InputError`` with its own code and a reason that
says what to change. Anything this returns can be stored and shown as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s2v.model.errors import InputError

# JSON strings, so brackets inside them are not counted as nesting (the unrolled form is linear).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[^\[\]{}]+")


@dataclass(frozen=True)
class Bounds:
    """What a document may hold. A params file is a few flat settings; a manifest is a list of rows."""

    max_bytes: int
    max_depth: int = 4  # {"rows": [{...}]} is 3 deep
    max_digits: int = 24  # characters of one number: a seed has 10, a float ~20
    max_keys: int = 64  # in one object: the known keys are a dozen
    max_string_chars: int = 0  # 0: only the document's size bounds a string
    check_text: bool = True  # False: the caller checks text per part (a manifest, row by row)
    syntax_code: str = "invalid_json"  # the code of a document that is not JSON at all


SIDECAR = Bounds(max_bytes=64 * 1024, max_string_chars=64 * 1024)


def parse(raw: bytes | str, where: str, bounds: Bounds, *, example: str,
          error: type[InputError] = InputError) -> Any:
    """``raw`` as a JSON value within ``bounds``, or ``error`` (an ``InputError``) saying what to fix.

    ``where`` names the document in the reasons; ``example`` shows what a good one looks like."""
    if len(raw) > bounds.max_bytes:  # characters of a str: at most its bytes
        raise error(f"{where} is {len(raw):,} bytes; the limit is {bounds.max_bytes:,} bytes: "
                    f"{'split it' if bounds.max_bytes > 1024 * 1024 else 'a params file holds a few short settings'}.",
                    code="document_too_large")
    code = bounds.syntax_code
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8-sig")  # tolerate the BOM Windows editors write
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (bad byte at offset {exc.start}): save it as UTF-8 JSON, "
                    f"like {example}.", code=code) from exc
    if not text.strip():
        raise error(f"{where} is empty: write a JSON document like {example}.", code=code)
    _check_depth(text, where, bounds, error)
    try:
        value = json.loads(text, object_pairs_hook=_object_hook(where, bounds, error),
                           parse_int=_number_hook(int, where, bounds, error),
                           parse_float=_number_hook(float, where, bounds, error),
                           parse_constant=lambda name: _no_constant(name, where, code, error))
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
                    f"Fix it so it reads like {example}.", code=code) from exc
    except RecursionError as exc:  # unreachable past _check_depth; kept so no document can crash a caller
        raise error(f"{where} is nested too deeply: keep it flat, like {example}.", code="document_too_deep") from exc
    if bounds.check_text:
        check_text(value, where, error=error)
    if bounds.max_string_chars:
        _check_strings(value, where, bounds.max_string_chars, error)
    return value


def check_text(value: Any, where: str, *, error: type[InputError] = InputError) -> None:
    """Every string in ``value`` (keys too) is text that encodes as UTF-8, or ``error``: a ``\\ud800``
    escape decodes to half of a UTF-16 pair, which no store or file can hold."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{where} holds an escape like \\u{ord(exc.object[exc.start]):04x}, half of a UTF-16 surrogate "
                    "pair, which is not text: write the character itself (or its full pair of escapes).",
                    code="not_utf8_text") from exc


def storable(value: Any, *, max_chars: int = 200) -> Any:
    """A copy of a parsed value that can always be stored and shown: surrogates written as escapes,
    long strings cut (for a refused row's values, kept only to say what it held)."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= max_chars else text[:max_chars] + "…"
    if isinstance(value, dict):
        return {storable(k, max_chars=max_chars): storable(v, max_chars=max_chars) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v, max_chars=max_chars) for v in value]
    return value


def _check_depth(text: str, where: str, bounds: Bounds, error: type[InputError]) -> None:
    opened = text.count("[") + text.count("{")
    if opened <= bounds.max_depth:
        return  # cannot be deeper than the brackets it has (C-speed counts: the common case)
    depth = 0
    for bracket in _BRACKETS.sub("", _STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        if depth > bounds.max_depth:
            raise error(f"{where} is nested more than {bounds.max_depth} levels deep; a document here is flat "
                        "(an object of settings, or a list of rows): remove the extra brackets.",
                        code="document_too_deep")


def _object_hook(where: str, bounds: Bounds, error: type[InputError]) -> Callable[[list[tuple[str, Any]]], dict]:
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > bounds.max_keys:
            raise error(f"{where} has an object with {len(pairs):,} keys; the limit is {bounds.max_keys}: only the "
                        "documented keys (a dozen) are read.", code="too_many_keys")
        document: dict[str, Any] = {}
        for name, value in pairs:
            if name in document:  # json.loads would keep the last one silently
                shown = storable(name, max_chars=60)
                raise error(f"{where} sets {shown!r} more than once: keep one.", code=bounds.syntax_code)
            document[name] = value
        return document
    return build


def _number_hook(kind: type, where: str, bounds: Bounds, error: type[InputError]) -> Callable[[str], Any]:
    def convert(literal: str) -> Any:
        if len(literal) > bounds.max_digits:
            raise error(f"{where} holds a number {len(literal):,} characters long ({literal[:12]}…); numbers here "
                        f"have at most {bounds.max_digits} characters (a seed is at most 2147483647).",
                        code="number_too_long")
        number = kind(literal)
        if kind is float and number in (float("inf"), float("-inf")):
            raise error(f"{where} holds the number {literal}, too large to be a number of anything here.",
                        code="number_too_long")
        return number
    return convert


def _no_constant(name: str, where: str, code: str, error: type[InputError]) -> None:
    raise error(f"{where} contains {name}, which is not valid JSON: use a number.", code=code)


def _check_strings(value: Any, where: str, limit: int, error: type[InputError]) -> None:
    if isinstance(value, str):
        if len(value) > limit:
            raise error(f"{where} holds a text of {len(value):,} characters; the limit is {limit:,}.",
                        code="string_too_long")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k, where, limit, error)
            _check_strings(v, where, limit, error)
    elif isinstance(value, list):
        for v in value:
            _check_strings(v, where, limit, error)
