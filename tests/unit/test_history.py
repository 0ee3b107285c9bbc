"""A job's history stays bounded whatever happens to the job (s2v.model.history)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from s2v.model import history

STEPS = st.lists(st.tuples(st.sampled_from(["QUEUED", "SUBMITTING", "SUBMITTED", "FAILED"]),
                           st.sampled_from(["admitted", "provider busy: 429", "waiting: budget", "", "x" * 5000,
                                            "bad \ud800 text"])), max_size=400)


def _run(steps: list[tuple[str, str]]) -> tuple[dict, ...]:
    entries: tuple[dict, ...] = ({"status": "RECEIVED", "at": 0.0, "note": "created"},)
    for at, (status, note) in enumerate(steps, start=1):
        entries = history.append(entries, history.entry(status, float(at), note))
    return entries


def _counted(entries: tuple[dict, ...]) -> int:
    return sum(int(e["omitted"]) if e["note"] == history.OMITTED_NOTE else int(e.get("cycles", 1)) for e in entries)


@given(STEPS)
def test_any_history_is_short_storable_and_accounts_for_every_step(steps: list[tuple[str, str]]) -> None:
    entries = _run(steps)
    assert len(entries) <= history.MAX_ENTRIES
    assert entries[0]["note"] == "created"
    assert _counted(entries) == len(steps) + 1  # nothing is lost: collapsed or omitted steps are counted
    size = len(json.dumps(entries, ensure_ascii=False).encode("utf-8"))
    assert size < history.MAX_ENTRIES * (history.MAX_NOTE_CHARS * 4 + 200)


def test_a_day_of_admit_and_defer_cycles_under_a_busy_provider_is_two_counted_entries() -> None:
    cycles = [("SUBMITTING", "admitted"), ("QUEUED", "provider busy: 429 Too Many Requests")] * 1440
    entries = _run([("QUEUED", "waiting: older jobs are waiting for a slot"), *cycles])
    assert [e["note"] for e in entries] == ["created", "waiting: older jobs are waiting for a slot", "admitted",
                                            "provider busy: 429 Too Many Requests"]
    assert entries[-1]["cycles"] == 1440 and entries[-1]["last_at"] == len(cycles) + 1
    assert len(json.dumps(entries)) < 1000
