"""Every job ends: each non-final state has a bound, and docs/reliability.md states each one."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from s2v.model.bounds import STATE_BOUNDS, unbounded_states
from s2v.model.jobs import TERMINAL, TRANSITIONS, Event, Status, next_status

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def test_every_non_final_state_has_a_bound() -> None:
    assert unbounded_states() == frozenset()
    assert not set(STATE_BOUNDS) & TERMINAL


@given(st.sampled_from([s for s in Status if s not in TERMINAL]))
def test_a_bounded_state_can_always_end_failed(state: Status) -> None:
    # The bound is useful only if reaching it can end the job: FAIL applies in every non-final state.
    assert next_status(state, Event.FAIL) is Status.FAILED


def test_every_state_a_transition_reaches_is_final_or_bounded() -> None:
    reached = {target for target in TRANSITIONS.values()}
    assert all(s in TERMINAL or s in STATE_BOUNDS for s in reached)


def test_the_reliability_doc_states_each_bound_and_its_code() -> None:
    text = DOC.read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines()
            if line.startswith("| `") and line.count("|") >= 4}
    for state, bound in STATE_BOUNDS.items():
        assert str(state) in rows, f"docs/reliability.md has no row for {state}"
        assert f"`{bound.code}`" in rows[str(state)], f"{state}'s row does not name {bound.code}"
