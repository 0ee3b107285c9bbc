"""A job is stored without its default attributes (DynamoDB bills every byte written) and reads back
the same; what conditions, filters and indexes need present is always written."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s2v.adapters.store import deserialize_item, serialize
from s2v.model.jobs import ALWAYS_STORED, PARENT_TALLIES, Failure, InputObject, Job, Status

texts = st.text(max_size=12)
numbers = st.one_of(st.just(0), st.just(0.0), st.integers(0, 10**6), st.integers(1, 10**8).map(lambda n: n / 100))
inputs = st.builds(InputObject, key=texts.map(lambda t: f"inputs/{t}.png"), etag=texts, size=st.integers(0, 10**9),
                   version_id=texts)


def _value_for(field: dataclasses.Field[Any]) -> st.SearchStrategy[Any]:
    """The field at its default or at another value of its type."""
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
    kind = type(default)
    other: st.SearchStrategy[Any]
    if field.name == "failure":
        other = st.builds(Failure, stage=texts, code=texts, reason=texts)
    elif field.name == "final_cost_usd":
        other = st.integers(0, 10**4).map(lambda n: n / 100)
    elif field.name == "extra_inputs":
        other = st.dictionaries(st.sampled_from(["mask", "left", "right"]), inputs, max_size=2)
    elif kind is bool:
        other = st.booleans()
    elif kind in (int, float):
        other = numbers
    elif kind is str:
        other = texts
    elif kind is dict:
        other = st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(texts, st.integers(0, 99)), max_size=3)
    elif kind is tuple:
        other = st.lists(st.dictionaries(st.text(min_size=1, max_size=6), texts, max_size=2), max_size=3).map(tuple)
    else:
        raise AssertionError(f"no strategy for {field.name}: {kind}")
    return st.one_of(st.just(default), other)


OPTIONAL = [f for f in dataclasses.fields(Job) if f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING]
jobs = st.builds(
    Job, job_id=st.text("0123456789abcdef", min_size=32, max_size=32), status=st.sampled_from(list(Status)),
    version=st.integers(0, 50), folder=texts, stem=st.text(min_size=1, max_size=12), image=st.none() | inputs,
    audio=st.none() | inputs, created_at=numbers, updated_at=numbers,
    **{f.name: _value_for(f) for f in OPTIONAL if f.name != "record_type"})


def stored(item: dict[str, Any]) -> dict[str, Any]:
    """Through DynamoDB's wire format and back, as the store writes and reads it."""
    return deserialize_item({k: serialize(v) for k, v in item.items() if v is not None})


@settings(max_examples=100, deadline=None)
@given(jobs)
def test_a_lean_item_reads_back_as_the_same_job_as_the_full_one(job: Job) -> None:
    assert Job.from_dict(stored(job.to_item())) == Job.from_dict(stored(job.to_dict()))


@settings(max_examples=100, deadline=None)
@given(jobs)
def test_a_lean_item_holds_every_attribute_a_condition_filter_or_index_needs(job: Job) -> None:
    item = job.to_item()
    # The key, the state and version every write is conditional on, the indexes' keys, the history.
    assert set(item) >= ALWAYS_STORED
    # A parent's segment tallies: settle_segment's condition is attribute_exists(rendered / failed_segments).
    if job.is_parent:
        assert set(item) >= PARENT_TALLIES


def test_a_new_job_is_written_with_about_half_its_attributes() -> None:
    job = Job(job_id="a" * 32, status=Status.RECEIVED, version=0, folder="talks", stem="alice",
              image=InputObject("inputs/talks/alice.png", "e1", 100),
              audio=InputObject("inputs/talks/alice.wav", "e2", 200),
              created_at=1.7e9, updated_at=1.7e9, params={"resolution": "480p"}, audio_seconds=5.0)
    assert len(job.to_item()) < len(job.to_dict()) / 2
