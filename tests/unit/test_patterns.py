"""The event-filter matcher behind the local stream trigger (EventBridge pattern semantics)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v_local.patterns import PatternError, matches, matches_any, parse

DELIVER_FILTER = parse('{"dynamodb": {"NewImage": {"status": {"S": ["COMPLETED", "FAILED"]}}}}')


def stream_record(status: str | None, event_name: str = "MODIFY") -> dict[str, Any]:
    image = {"job_id": {"S": "j1"}}
    if status is not None:
        image["status"] = {"S": status}
    return {"eventName": event_name, "dynamodb": {"Keys": {"job_id": {"S": "j1"}}, "NewImage": image}}


@pytest.mark.parametrize(("status", "expected"), [
    ("COMPLETED", True), ("FAILED", True), ("PROCESSING", False), ("DELIVERED", False), ("completed", False),
    (None, False),
])
def test_deliver_filter_passes_only_finished_jobs(status: str | None, expected: bool) -> None:
    assert matches(DELIVER_FILTER, stream_record(status)) is expected


def test_a_removed_item_has_no_new_image_and_does_not_match() -> None:
    record = {"eventName": "REMOVE", "dynamodb": {"OldImage": {"status": {"S": "COMPLETED"}}}}
    assert not matches(DELIVER_FILTER, record)


def test_exists_distinguishes_present_from_missing_fields() -> None:
    pattern = {"dynamodb": {"NewImage": {"failure": {"M": [{"exists": True}]}}}}
    absent = {"dynamodb": {"NewImage": {"failure": [{"exists": False}]}}}
    with_failure = {"dynamodb": {"NewImage": {"failure": {"M": {"stage": {"S": "deliver"}}}}}}

    assert matches(pattern, with_failure)
    assert not matches(pattern, stream_record("FAILED"))
    assert matches(absent, stream_record("FAILED"))
    assert not matches(absent, with_failure)


def test_anything_but_excludes_values_and_needs_the_field() -> None:
    pattern = {"eventName": [{"anything-but": ["REMOVE", "INSERT"]}]}
    assert matches(pattern, {"eventName": "MODIFY"})
    assert not matches(pattern, {"eventName": "REMOVE"})
    assert not matches(pattern, {})
    assert matches({"eventName": [{"anything-but": "REMOVE"}]}, {"eventName": "INSERT"})
    assert not matches({"key": [{"anything-but": {"prefix": "outputs/"}}]}, {"key": "outputs/a.mp4"})
    assert matches({"key": [{"anything-but": {"prefix": "outputs/"}}]}, {"key": "inputs/a.png"})


def test_prefix_matches_strings_only() -> None:
    pattern = {"key": [{"prefix": "inputs/"}]}
    assert matches(pattern, {"key": "inputs/talks/a.png"})
    assert not matches(pattern, {"key": "outputs/inputs/a.png"})
    assert not matches(pattern, {"key": 7})


def test_literals_compare_with_json_types() -> None:
    assert matches({"n": [1]}, {"n": 1.0})
    assert not matches({"n": [1]}, {"n": True})
    assert not matches({"b": [True]}, {"b": 1})
    assert not matches({"s": ["1"]}, {"s": 1})
    assert matches({"z": [None]}, {"z": None})
    assert not matches({"z": [None]}, {})


def test_an_array_in_the_event_matches_when_any_element_does() -> None:
    assert matches({"tags": ["video"]}, {"tags": ["audio", "video"]})
    assert not matches({"tags": ["image"]}, {"tags": ["audio", "video"]})


def test_no_filters_let_everything_through_and_several_are_alternatives() -> None:
    assert matches_any([], {"anything": 1})
    alternatives = [{"a": ["x"]}, {"b": ["y"]}]
    assert matches_any(alternatives, {"b": "y"})
    assert not matches_any(alternatives, {"a": "y", "b": "x"})


@pytest.mark.parametrize("text", [
    "not json", "[]", "{}", '{"a": "x"}', '{"a": []}', '{"a": [{"numeric": [">", 1]}]}',
    '{"a": [{"exists": "yes"}]}', '{"a": [{"prefix": 1}]}', '{"a": [[1]]}',
    '{"a": [{"anything-but": {"suffix": "x"}}]}',
])
def test_unsupported_or_malformed_patterns_are_rejected_up_front(text: str) -> None:
    with pytest.raises(PatternError):
        parse(text)


# A random JSON-ish event and a pattern taken from one of its leaves must always match; the same
# pattern negated with anything-but must not.
keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
scalars = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none())
events = st.recursive(st.dictionaries(keys, scalars, min_size=1, max_size=4),
                      lambda children: st.dictionaries(keys, children, min_size=1, max_size=3),
                      max_leaves=12)


def leaves(event: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for key, value in event.items():
        if isinstance(value, dict):
            found += leaves(value, (*path, key))
        else:
            found.append(((*path, key), value))
    return found


def pattern_for(path: tuple[str, ...], rule: Any) -> dict[str, Any]:
    pattern: Any = [rule]
    for key in reversed(path):
        pattern = {key: pattern}
    return pattern


@given(events, st.data())
def test_a_pattern_built_from_an_events_own_value_matches_it(event: dict[str, Any], data: st.DataObject) -> None:
    path, value = data.draw(st.sampled_from(leaves(event)))

    assert matches(pattern_for(path, value), event)
    assert matches(pattern_for(path, {"exists": True}), event)
    assert not matches(pattern_for(path, {"exists": False}), event)
    assert not matches(pattern_for(path, {"anything-but": value}), event)


@given(events, keys)
def test_a_field_the_event_lacks_only_matches_exists_false(event: dict[str, Any], key: str) -> None:
    missing = "Z" + key  # never generated as a key, so absent
    assert matches(pattern_for((missing,), {"exists": False}), event)
    assert not matches(pattern_for((missing,), {"exists": True}), event)
    assert not matches(pattern_for((missing,), {"anything-but": "x"}), event)
