"""The job state machine: every (state, event) pair has the expected result."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.jobs import (
    IN_FLIGHT,
    TERMINAL,
    Event,
    InputObject,
    Status,
    job_id_for,
    next_status,
    poll_delay,
)

S, E = Status, Event
# The full expected table, written out independently of TRANSITIONS: None means "no-op".
EXPECTED: dict[Status, dict[Event, Status | None]] = {
    S.RECEIVED: {E.ADMIT: S.SUBMITTING, E.DEFER: S.QUEUED, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED,
                 E.SPLIT: S.SPLITTING},
    S.QUEUED: {E.ADMIT: S.SUBMITTING, E.DEFER: S.QUEUED, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    S.SUBMITTING: {E.DEFER: S.QUEUED, E.SUBMIT_ACCEPTED: S.SUBMITTED, E.PROVIDER_CREATED: S.SUBMITTED,
                   E.PROVIDER_PROCESSING: S.PROCESSING, E.PROVIDER_COMPLETED: S.COMPLETED, E.FAIL: S.FAILED,
                   E.CANCEL: S.CANCELLED},
    S.SUBMITTED: {E.PROVIDER_PROCESSING: S.PROCESSING, E.PROVIDER_COMPLETED: S.COMPLETED, E.FAIL: S.FAILED,
                  E.CANCEL: S.CANCELLED},
    S.PROCESSING: {E.PROVIDER_COMPLETED: S.COMPLETED, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    # Rendered but not yet in the bucket: still cancellable (it is then never delivered).
    S.COMPLETED: {E.DELIVERED: S.DELIVERED, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    # A long talk's parent job (flows/longform.py): it never goes to the provider itself.
    S.SPLITTING: {E.SEGMENTS_CREATED: S.RENDERING, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    S.RENDERING: {E.SEGMENTS_RENDERED: S.STITCHING, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    S.STITCHING: {E.STITCHED: S.DELIVERED, E.FAIL: S.FAILED, E.CANCEL: S.CANCELLED},
    S.DELIVERED: {},
    S.FAILED: {},
    S.CANCELLED: {},  # terminal: a late completion, a second cancel or a failure changes nothing
}


@pytest.mark.parametrize("state", list(Status))
@pytest.mark.parametrize("event", list(Event))
def test_every_state_event_pair_has_the_expected_result(state: Status, event: Event) -> None:
    assert next_status(state, event) == EXPECTED[state].get(event)


ORDER = [S.RECEIVED, S.QUEUED, S.SUBMITTING, S.SUBMITTED, S.PROCESSING, S.COMPLETED, S.DELIVERED]
# A talk's parent: RECEIVED, then its own steps to DELIVERED.
PARENT_ORDER = [S.RECEIVED, S.SPLITTING, S.RENDERING, S.STITCHING, S.DELIVERED]


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_no_sequence_of_events_moves_a_job_backwards_or_out_of_a_terminal_state(events: list[Event]) -> None:
    state = S.RECEIVED
    for event in events:
        new = next_status(state, event)
        if new is None:
            continue
        assert state not in TERMINAL
        if new not in (S.FAILED, S.CANCELLED) and not (state is S.SUBMITTING and new is S.QUEUED):
            order = PARENT_ORDER if new in PARENT_ORDER and state in PARENT_ORDER else ORDER
            assert order.index(new) >= order.index(state)
        state = new


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_a_cancelled_job_stays_cancelled_whatever_arrives_after(events: list[Event]) -> None:
    # Given a job cancelled at any point of its life
    state = S.RECEIVED
    for event in events:
        state = next_status(state, event) or state
    if state in TERMINAL:
        return
    state = next_status(state, E.CANCEL)  # type: ignore[assignment]
    assert state is S.CANCELLED
    # When late statuses, retries or a second cancel arrive, Then none applies
    for event in Event:
        assert next_status(S.CANCELLED, event) is None


def test_every_unfinished_state_can_be_cancelled_and_no_finished_one_can() -> None:
    assert {s for s in Status if next_status(s, E.CANCEL) is S.CANCELLED} == set(Status) - TERMINAL
    assert S.CANCELLED in TERMINAL


def test_late_processing_after_completed_is_a_no_op() -> None:
    assert next_status(S.COMPLETED, E.PROVIDER_PROCESSING) is None
    assert next_status(S.DELIVERED, E.PROVIDER_COMPLETED) is None


def test_in_flight_states_are_exactly_those_holding_a_provider_slot() -> None:
    assert {S.SUBMITTING, S.SUBMITTED, S.PROCESSING} == IN_FLIGHT


def _obj(key: str, etag: str) -> InputObject:
    return InputObject(key=key, etag=etag, size=1)


def test_job_id_is_stable_for_the_same_objects_and_changes_with_any_etag_or_attempt() -> None:
    base = job_id_for("talks", "alice", _obj("inputs/talks/alice.png", "a"), _obj("inputs/talks/alice.wav", "b"))
    assert base == job_id_for("talks", "alice", _obj("inputs/talks/alice.png", "a"),
                              _obj("inputs/talks/alice.wav", "b"))
    assert base != job_id_for("talks", "alice", _obj("inputs/talks/alice.png", "a2"),
                              _obj("inputs/talks/alice.wav", "b"))
    assert base != job_id_for("talks", "alice", _obj("inputs/talks/alice.png", "a"),
                              _obj("inputs/talks/alice.wav", "b2"))
    assert base != job_id_for("talks", "alice", _obj("inputs/talks/alice.png", "a"),
                              _obj("inputs/talks/alice.wav", "b"), attempt=1)


@pytest.mark.parametrize(("seconds", "price", "expected"), [
    (0.4, 0.03, 0.09),      # at least 3 billed seconds
    (3.0, 0.03, 0.09),
    (5.0, 0.03, 0.15),      # $0.15 per 5 s at 480p
    (5.01, 0.03, 0.18),     # rounded up to whole seconds
    (10.0, 0.06, 0.60),     # $0.30 per 5 s at 720p
    (120.0, 0.03, 3.60),
])
def test_cost_estimate_follows_the_published_billing_rule(seconds: float, price: float, expected: float) -> None:
    from s2v.model.models import WAN_S2V

    resolution = {0.03: "480p", 0.06: "720p"}[price]
    assert WAN_S2V.price_usd({"audio": seconds}, resolution) == pytest.approx(expected)


def test_poll_backoff_doubles_from_the_minimum_and_caps_at_the_maximum() -> None:
    assert [poll_delay(n, minimum=5, maximum=60) for n in range(6)] == [5, 10, 20, 40, 60, 60]


def _ended(admitted_day: str, reserved: float):
    from s2v.model.jobs import Job

    return Job(job_id="j", status=S.PROCESSING, version=3, folder="", stem="a", image=None, audio=None,
               created_at=0, updated_at=0, estimated_cost_usd=0.15, admitted_day=admitted_day,
               reserved_cost_usd=reserved)


def test_final_cost_is_the_estimate_once_the_provider_may_have_run_the_job() -> None:
    from s2v.model.jobs import final_cost

    assert final_cost(_ended("2026-11-25", 0.15), refunded=False) == pytest.approx(0.15)
    assert final_cost(_ended("2026-11-25", 0.15), refunded=True) == 0.0  # certainly never taken
    assert final_cost(_ended("", 0.0), refunded=False) == 0.0  # failed before admission
